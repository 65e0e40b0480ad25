import type { BackendSet, Endpoint } from "../model/backends.js";
import type { PushedEndpoint } from "../model/plan.js";
import { backendName, type BackendRef, type Route, type Server, type Services } from "../model/services.js";
import { NO_HEALTH, healthKey, type EndpointHealth, type Health } from "../health/targets.js";
import { fnv1a64 } from "./hash.js";
import { sortStrings } from "../shared/sort.js";

/** An endpoint as an upstream `server` line needs it: the same record dynamic mode pushes to the balancer. */
export type UpstreamMember = PushedEndpoint;

/** A route joined with its endpoints and its upstream name; the unit both render modes work from. */
export interface BoundRoute {
  readonly server: Server;
  readonly route: Route;
  readonly upstream: string;
  /** Primaries first, then backups; sorted; empty when nothing can serve (the route answers 503). */
  readonly members: readonly UpstreamMember[];
  /**
   * With a health check on the primary or backup: each member's check verdict, in the order of `members` (`unknown`
   * before the first verdict, null for a member its side does not check). A member down by check has weight 0.
   */
  readonly health?: readonly (MemberHealth | null)[];
  /** Every endpoint that could serve is down by check: the route serves them all anyway rather than answer 503. */
  readonly failOpen?: boolean;
}

/** A checked member's verdict as the route sees it. */
export type MemberHealth = EndpointHealth | { readonly state: "unknown" };

type Bound = Pick<BoundRoute, "members" | "health" | "failOpen">;

/** The endpoints of one route: primaries, then backups not already primaries; empty when nothing can serve. */
export function members(route: Route, backends: BackendSet): UpstreamMember[] {
  return [...bindMembers(route, backends, NO_HEALTH).members];
}

/**
 * A route's members with health applied: an endpoint down by check gets weight 0 (nginx renders it `down`, the
 * balancer never picks it), so backups serve when every primary is down; when every endpoint that could serve is
 * down by check, the check is ignored for the route (fail open) and `failOpen` says so.
 */
function bindMembers(route: Route, backends: BackendSet, health: Health): Bound {
  // Nearly every route: one backend, no check. Its members straight from the record, without the steps below (at
  // 10,000 routes they are most of a first compile); the result is the same.
  if (route.backup === undefined && route.primary.healthCheck === undefined)
    return plainMembers(route.primary, backends);
  const toMembers = (ref: BackendRef, backup: boolean) => {
    const eps: Readonly<Record<string, Endpoint>> | undefined = backends[backendName(ref)];
    const check = ref.healthCheck;
    return Object.keys(eps ?? {})
      .sort()
      .map((ip) => ({
        member: { ip, port: ref.port, weight: eps?.[ip]?.weight ?? 1, backup },
        health: check ? (health.get(healthKey(check, ip, ref.port)) ?? { state: "unknown" as const }) : null,
      }));
  };
  const primaries = toMembers(route.primary, false);
  const seen = new Set(primaries.map((m) => `${m.member.ip} ${m.member.port}`));
  const backups = route.backup
    ? toMembers(route.backup, true).filter((m) => !seen.has(`${m.member.ip} ${m.member.port}`))
    : [];
  let all = [...primaries, ...backups];
  const live = (ms: typeof all, byCheck: boolean) =>
    ms.some((m) => m.member.weight > 0 && (!byCheck || m.health?.state !== "down"));
  if (!live(all, false)) return { members: [] };
  const failOpen = !live(all, true);
  if (!failOpen) all = all.map((m) => (m.health?.state === "down" ? { ...m, member: { ...m.member, weight: 0 } } : m));
  // nginx needs at least one non-backup server; with no primary at all the backups are all there is.
  const list = primaries.length === 0 ? all.map((m) => ({ ...m, member: { ...m.member, backup: false } })) : all;
  const checked = list.some((m) => m.health !== null);
  return {
    members: list.map((m) => m.member),
    ...(checked ? { health: list.map((m) => m.health) } : {}),
    ...(failOpen ? { failOpen } : {}),
  };
}

/** The members of a route with one backend and no check (see bindMembers). */
function plainMembers(ref: BackendRef, backends: BackendSet): Bound {
  const eps: Readonly<Record<string, Endpoint>> | undefined = backends[backendName(ref)];
  if (eps === undefined) return { members: [] };
  const ips = sortStrings(Object.keys(eps));
  const members: UpstreamMember[] = [];
  let live = false;
  for (const ip of ips) {
    const weight = eps[ip]?.weight ?? 1;
    live ||= weight > 0;
    members.push({ ip, port: ref.port, weight, backup: false });
  }
  return live ? { members } : { members: [] };
}

/** A route's upstream name before any collision suffix: a hash of where it is served. */
const baseName = (server: Server, route: Route) => `nlb_${fnv1a64(`${server.domain}|${server.port}|${route.prefix}`)}`;
const BASE_LENGTH = "nlb_".length + 16;

/** Joins every route with its endpoints and gives it an upstream name that no other route can have. */
export function bindRoutes(
  services: Services,
  backends: BackendSet,
  health: Health = NO_HEALTH,
): readonly BoundRoute[] {
  const used = new Set<string>();
  const bound: BoundRoute[] = [];
  for (const server of services.servers) {
    for (const route of server.routes) {
      const base = baseName(server, route);
      let upstream = base;
      for (let n = 2; used.has(upstream); n++) upstream = `${base}_${n}`;
      used.add(upstream);
      bound.push({ server, route, upstream, ...bindMembers(route, backends, health) });
    }
  }
  return bound;
}

/**
 * `bindRoutes(services, backends, health)` given `previous`, the routes of another routing model: a server of
 * `services` that is also a server of `previous`'s routes (the same object, see shareServers) keeps its BoundRoutes
 * by reference, then everything is re-bound to the endpoint snapshot as rebindRoutes does. Only new servers are
 * joined and named, so a change to one of 10,000 sites costs a lookup per server. Returns null when a name took a
 * collision suffix (on either side): names then depend on order, and only a full bindRoutes gets them right.
 */
export function bindServers(
  previous: readonly BoundRoute[],
  services: Services,
  before: BackendSet,
  after: BackendSet,
  healthBefore: Health,
  healthAfter: Health,
): readonly BoundRoute[] | null {
  const kept = new Map<Server, BoundRoute[]>();
  for (const r of previous) {
    const list = kept.get(r.server);
    if (list) list.push(r);
    else kept.set(r.server, [r]);
  }
  const names = new Set<string>();
  const bound: BoundRoute[] = [];
  for (const server of services.servers) {
    const old = kept.get(server);
    if (old !== undefined && old.length === server.routes.length) {
      for (const r of old) {
        if (r.upstream.length !== BASE_LENGTH) return null;
        names.add(r.upstream);
        bound.push(r);
      }
      continue;
    }
    for (const route of server.routes) {
      const upstream = baseName(server, route);
      names.add(upstream);
      bound.push({ server, route, upstream, ...bindMembers(route, after, healthAfter) });
    }
  }
  if (names.size !== bound.length) return null;
  // Fresh routes are bound to `after` already: rebinding them again finds their records changed only when the
  // endpoints changed in the same apply, and then gives the same result.
  if (before === after && healthBefore === healthAfter) return bound;
  return rebindRoutes(bound, before, after, healthBefore, healthAfter);
}

/**
 * Where two routing models differ, by identity: the first `head` and the last `tail` servers of both are the same
 * objects (shareServers keeps unchanged servers' objects), and everything between is the change. `headRoutes` and
 * `tailRoutes` count those servers' routes (every route of a server is bound, in order, so they are the first and the
 * last of either model's bound routes).
 */
export interface ServerSplice {
  readonly head: number;
  readonly tail: number;
  readonly headRoutes: number;
  readonly tailRoutes: number;
}

/** The splice between two server lists (pure): pointer comparisons from both ends, nothing allocated per server. */
export function serverSplice(before: readonly Server[], after: readonly Server[]): ServerSplice {
  const max = Math.min(before.length, after.length);
  let head = 0;
  while (head < max && before[head] === after[head]) head++;
  let tail = 0;
  while (tail < max - head && before[before.length - 1 - tail] === after[after.length - 1 - tail]) tail++;
  let headRoutes = 0;
  for (let i = 0; i < head; i++) headRoutes += before[i]?.routes.length ?? 0;
  let tailRoutes = 0;
  for (let i = before.length - tail; i < before.length; i++) tailRoutes += before[i]?.routes.length ?? 0;
  return { head, tail, headRoutes, tailRoutes };
}

/** What spliceRoutes built: every route, and the routes between the splice's head and tail on each side. */
export interface SplicedRoutes {
  readonly routes: readonly BoundRoute[];
  /** `previous`'s routes of the servers between head and tail, and the new model's (kept ones by reference). */
  readonly before: readonly BoundRoute[];
  readonly after: readonly BoundRoute[];
}

/**
 * `bindRoutes(services, backends, health)` given `previous`, the routes of another routing model bound to the same
 * backends and health, and the splice between the two models' servers: the routes of the head and tail servers are
 * `previous`'s by reference (two slices), as are those of a server between them that `previous` had too (the same
 * object), and only the other servers are joined and named. A one-site change to 10,000 sites then binds one site
 * and compares names in one pass without allocating per route. Null when a name took a collision suffix or a new
 * name equals a kept one (names then depend on order, and only a full bindRoutes gets them right).
 */
export function spliceRoutes(
  previous: readonly BoundRoute[],
  services: Services,
  cut: ServerSplice,
  backends: BackendSet,
  health: Health,
): SplicedRoutes | null {
  const was = previous.slice(cut.headRoutes, previous.length - cut.tailRoutes);
  const kept = new Map<Server, BoundRoute[]>();
  for (const r of was) {
    const list = kept.get(r.server);
    if (list) list.push(r);
    else kept.set(r.server, [r]);
  }
  const now: BoundRoute[] = [];
  const fresh = new Set<string>();
  for (let i = cut.head; i < services.servers.length - cut.tail; i++) {
    const server = services.servers[i];
    if (server === undefined) continue;
    const old = kept.get(server);
    if (old !== undefined) {
      now.push(...old);
      kept.delete(server);
      continue;
    }
    for (const route of server.routes) {
      const upstream = baseName(server, route);
      if (fresh.has(upstream)) return null;
      fresh.add(upstream);
      now.push({ server, route, upstream, ...bindMembers(route, backends, health) });
    }
  }
  // `kept` holds the removed servers' routes now: their names are free. Every other route of `previous` stays.
  const removed = new Set<BoundRoute>();
  for (const list of kept.values()) for (const r of list) removed.add(r);
  for (const r of previous) {
    if (r.upstream.length !== BASE_LENGTH) return null;
    if (fresh.size > 0 && fresh.has(r.upstream) && !removed.has(r)) return null;
  }
  return {
    routes: previous.slice(0, cut.headRoutes).concat(now, previous.slice(previous.length - cut.tailRoutes)),
    before: was,
    after: now,
  };
}

/**
 * The same routes bound to a newer endpoint snapshot, given the routes bound to `before` (of the same routing model).
 * A route's members depend only on its primary's and backup's records, and registry snapshots share unchanged
 * records, so a route whose records are the same objects keeps its BoundRoute (and members array) by reference:
 * one comparison per route instead of re-sorting every endpoint, and later steps skip it by identity. A health
 * change re-binds only the checked routes that have an endpoint whose verdict changed.
 */
export function rebindRoutes(
  routes: readonly BoundRoute[],
  before: BackendSet,
  after: BackendSet,
  healthBefore: Health = NO_HEALTH,
  healthAfter: Health = healthBefore,
): readonly BoundRoute[] {
  const changed = changedKeys(healthBefore, healthAfter);
  const verdictChanged = (ref: BackendRef | undefined) => {
    const check = ref?.healthCheck;
    if (!ref || !check || changed.size === 0) return false;
    return Object.keys(after[backendName(ref)] ?? {}).some((ip) => changed.has(healthKey(check, ip, ref.port)));
  };
  return routes.map((r) => {
    const { primary, backup } = r.route;
    const same =
      before[backendName(primary)] === after[backendName(primary)] &&
      (!backup || before[backendName(backup)] === after[backendName(backup)]) &&
      !verdictChanged(primary) &&
      !verdictChanged(backup);
    if (same) return r;
    const { health: _h, failOpen: _f, ...rest } = r;
    return { ...rest, ...bindMembers(r.route, after, healthAfter) };
  });
}

/** The keys whose verdict differs between two health maps (verdicts are replaced, never mutated). */
function changedKeys(a: Health, b: Health): Set<string> {
  const out = new Set<string>();
  if (a === b) return out;
  for (const [k, v] of a) if (b.get(k) !== v) out.add(k);
  for (const k of b.keys()) if (!a.has(k)) out.add(k);
  return out;
}
