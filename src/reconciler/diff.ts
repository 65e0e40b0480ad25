import type { Desired } from "../render/index.js";
import { planRoutes } from "../render/index.js";

/** What an apply changes, for the log and the status API: upstreams and endpoints added and removed. */
export interface Change {
  readonly upstreamsAdded: readonly string[];
  readonly upstreamsRemoved: readonly string[];
  readonly endpointsAdded: readonly string[];
  readonly endpointsRemoved: readonly string[];
  /** Set when the lists were shortened (status records): the full counts. */
  readonly counts?: {
    readonly upstreamsAdded: number;
    readonly upstreamsRemoved: number;
    readonly endpointsAdded: number;
    readonly endpointsRemoved: number;
  };
}

type Plan = ReturnType<typeof planRoutes>[number];

const label = (p: Plan) => `${p.server.domain}:${p.server.port}${p.route.prefix}`;
const endpointsOf = (p: Plan) =>
  new Set(
    p.members.map((m) => `${m.ip}:${m.port}${m.backup ? " backup" : ""}${m.weight === 0 ? " down" : ` w${m.weight}`}`),
  );

/**
 * Compares two desired states route by route (pure). Plans of an unchanged route are shared by reference between
 * snapshots of one routing model, so an endpoint change costs a comparison per route, not a walk of every endpoint.
 */
export function diffDesired(before: Desired | null, after: Desired): Change {
  const a = new Map<string, Plan>();
  for (const p of before ? planRoutes(before.services, before.backends) : []) a.set(label(p), p);
  const b = new Map<string, Plan>();
  for (const p of planRoutes(after.services, after.backends)) b.set(label(p), p);
  const endpointsAdded: string[] = [];
  const endpointsRemoved: string[] = [];
  for (const [route, pb] of b) {
    const pa = a.get(route);
    if (pa === pb) continue;
    const ea = pa ? endpointsOf(pa) : new Set<string>();
    const eb = endpointsOf(pb);
    for (const e of eb) if (!ea.has(e)) endpointsAdded.push(`${route} ${e}`);
    for (const e of ea) if (!eb.has(e)) endpointsRemoved.push(`${route} ${e}`);
  }
  for (const [route, pa] of a)
    if (!b.has(route)) for (const e of endpointsOf(pa)) endpointsRemoved.push(`${route} ${e}`);
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
