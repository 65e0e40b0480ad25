import type { BoundRoute } from "../render/index.js";

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

const label = (p: BoundRoute) => `${p.server.domain}:${p.server.port}${p.route.prefix}`;
const endpointsOf = (p: BoundRoute) =>
  new Set(
    p.members.map((m) => `${m.ip}:${m.port}${m.backup ? " backup" : ""}${m.weight === 0 ? " down" : ` w${m.weight}`}`),
  );

/**
 * Compares two sets of bound routes route by route (pure). An unchanged route keeps its BoundRoute by reference
 * across an endpoint change (`rebindRoutes`), so such a change costs a comparison per route, not a walk of every
 * endpoint.
 */
export function diffRoutes(before: readonly BoundRoute[] | null, after: readonly BoundRoute[]): Change {
  const a = new Map<string, BoundRoute>();
  for (const p of before ?? []) a.set(label(p), p);
  const b = new Map<string, BoundRoute>();
  for (const p of after) b.set(label(p), p);
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
