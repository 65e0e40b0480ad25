import type { Desired } from "../render/index.js";
import { planRoutes } from "../render/index.js";

/** What an apply changes, for the log and the status API: upstreams and endpoints added and removed. */
export interface Change {
  readonly upstreamsAdded: readonly string[];
  readonly upstreamsRemoved: readonly string[];
  readonly endpointsAdded: readonly string[];
  readonly endpointsRemoved: readonly string[];
}

function index(desired: Desired | null): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  if (!desired) return out;
  for (const p of planRoutes(desired.services, desired.backends)) {
    const label = `${p.server.domain}:${p.server.port}${p.route.prefix}`;
    out.set(
      label,
      new Set(
        p.members.map(
          (m) => `${m.ip}:${m.port}${m.backup ? " backup" : ""}${m.weight === 0 ? " down" : ` w${m.weight}`}`,
        ),
      ),
    );
  }
  return out;
}

/** Compares two desired states route by route (pure). */
export function diffDesired(before: Desired | null, after: Desired): Change {
  const a = index(before);
  const b = index(after);
  const endpointsAdded: string[] = [];
  const endpointsRemoved: string[] = [];
  for (const [route, eps] of b) for (const e of eps) if (!a.get(route)?.has(e)) endpointsAdded.push(`${route} ${e}`);
  for (const [route, eps] of a) for (const e of eps) if (!b.get(route)?.has(e)) endpointsRemoved.push(`${route} ${e}`);
  return {
    upstreamsAdded: [...b.keys()].filter((k) => !a.has(k)),
    upstreamsRemoved: [...a.keys()].filter((k) => !b.has(k)),
    endpointsAdded,
    endpointsRemoved,
  };
}

/** True when nothing changed. */
export function isEmptyChange(c: Change): boolean {
  return (
    !c.upstreamsAdded.length && !c.upstreamsRemoved.length && !c.endpointsAdded.length && !c.endpointsRemoved.length
  );
}
