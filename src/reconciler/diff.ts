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

/** Same endpoints with the same weight and role, in the same order: nothing of the route's to report. */
function sameMembers(a: BoundRoute, b: BoundRoute): boolean {
  if (a.members === b.members) return true;
  if (a.members.length !== b.members.length) return false;
  return a.members.every((m, i) => {
    const n = b.members[i];
    return n !== undefined && m.ip === n.ip && m.port === n.port && m.weight === n.weight && m.backup === n.backup;
  });
}

/**
 * Compares two sets of bound routes route by route (pure). An unchanged route keeps its BoundRoute by reference
 * across an endpoint change (`rebindRoutes`), so such a change costs a comparison per route, not a walk of every
 * endpoint.
 */
export function diffRoutes(before: readonly BoundRoute[] | null, after: readonly BoundRoute[]): Change {
  // A route kept by reference on both sides has nothing to report, and labels are unique on each side (one server per
  // domain and port, one route per prefix): it is left out before any label is built. A routing change to one of
  // 10,000 sites (bindServers) then labels only the routes it touched.
  const inAfter = new Set(after);
  const kept = new Set<BoundRoute>();
  for (const p of before ?? []) if (inAfter.has(p)) kept.add(p);
  const a = new Map<string, BoundRoute>();
  for (const p of before ?? []) if (!kept.has(p)) a.set(label(p), p);
  const b = new Map<string, BoundRoute>();
  for (const p of after) if (!kept.has(p)) b.set(label(p), p);
  const endpointsAdded: string[] = [];
  const endpointsRemoved: string[] = [];
  for (const [route, pb] of b) {
    const pa = a.get(route);
    // A routing change binds every route afresh: most keep their endpoints, and need no set of strings to say so.
    if (pa === pb || (pa !== undefined && sameMembers(pa, pb))) continue;
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

/** The longest list of names a kept change holds; the counts stay exact. */
export const CHANGE_NAMES = 100;

/**
 * A change as targets and status records keep it: at most CHANGE_NAMES names per list, and the full counts. A first
 * start with 100,000 endpoints would otherwise hold that many strings for as long as its target is the one applied.
 */
export function briefChange(c: Change): Change {
  const cut = (l: readonly string[]) =>
    l.length > CHANGE_NAMES ? [...l.slice(0, CHANGE_NAMES), `... and ${l.length - CHANGE_NAMES} more`] : l;
  return {
    upstreamsAdded: cut(c.upstreamsAdded),
    upstreamsRemoved: cut(c.upstreamsRemoved),
    endpointsAdded: cut(c.endpointsAdded),
    endpointsRemoved: cut(c.endpointsRemoved),
    counts: c.counts ?? {
      upstreamsAdded: c.upstreamsAdded.length,
      upstreamsRemoved: c.upstreamsRemoved.length,
      endpointsAdded: c.endpointsAdded.length,
      endpointsRemoved: c.endpointsRemoved.length,
    },
  };
}

/**
 * `briefChange(diffRoutes(before, after))`. Against nothing (a first compile) every route and endpoint is added: the
 * first names and the counts come straight from the routes, without a name per endpoint (100,000 at 10,000 routes)
 * that the brief would drop again. Labels are unique, and so are a route's members (by address and port).
 */
export function briefDiff(before: readonly BoundRoute[] | null, after: readonly BoundRoute[]): Change {
  if (before !== null) return briefChange(diffRoutes(before, after));
  const upstreamsAdded: string[] = [];
  const endpointsAdded: string[] = [];
  let endpoints = 0;
  for (const p of after) {
    if (upstreamsAdded.length <= CHANGE_NAMES) upstreamsAdded.push(label(p));
    endpoints += p.members.length;
    if (endpointsAdded.length > CHANGE_NAMES || p.members.length === 0) continue;
    const route = label(p);
    for (const e of endpointsOf(p)) if (endpointsAdded.length <= CHANGE_NAMES) endpointsAdded.push(`${route} ${e}`);
  }
  const more = (l: string[], n: number) =>
    n > CHANGE_NAMES ? [...l.slice(0, CHANGE_NAMES), `... and ${n - CHANGE_NAMES} more`] : l;
  return {
    upstreamsAdded: more(upstreamsAdded, after.length),
    upstreamsRemoved: [],
    endpointsAdded: more(endpointsAdded, endpoints),
    endpointsRemoved: [],
    counts: { upstreamsAdded: after.length, upstreamsRemoved: 0, endpointsAdded: endpoints, endpointsRemoved: 0 },
  };
}
