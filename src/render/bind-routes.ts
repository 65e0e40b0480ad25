import type { BackendSet, Endpoint } from "../model/backends.js";
import type { PushedEndpoint } from "../model/plan.js";
import { backendName, type Route, type Server, type Services } from "../model/services.js";
import { fnv1a64 } from "./hash.js";

/** An endpoint as an upstream `server` line needs it: the same record dynamic mode pushes to the balancer. */
export type UpstreamMember = PushedEndpoint;

/** A route joined with its endpoints and its upstream name; the unit both render modes work from. */
export interface BoundRoute {
  readonly server: Server;
  readonly route: Route;
  readonly upstream: string;
  /** Primaries first, then backups; sorted; empty when nothing can serve (the route answers 503). */
  readonly members: readonly UpstreamMember[];
}

/** The endpoints of one route: primaries, then backups not already primaries; empty when nothing can serve. */
export function members(route: Route, backends: BackendSet): UpstreamMember[] {
  const toMembers = (eps: Readonly<Record<string, Endpoint>> | undefined, port: number, backup: boolean) =>
    Object.keys(eps ?? {})
      .sort()
      .map((ip) => ({ ip, port, weight: eps?.[ip]?.weight ?? 1, backup }));
  const primaries = toMembers(backends[backendName(route.primary)], route.primary.port, false);
  const seen = new Set(primaries.map((m) => `${m.ip} ${m.port}`));
  const backups = route.backup
    ? toMembers(backends[backendName(route.backup)], route.backup.port, true).filter(
        (m) => !seen.has(`${m.ip} ${m.port}`),
      )
    : [];
  const live = (ms: UpstreamMember[]) => ms.some((m) => m.weight > 0);
  if (!live(primaries) && !live(backups)) return [];
  // nginx needs at least one non-backup server; with no primary at all the backups are all there is.
  if (primaries.length === 0) return backups.map((m) => ({ ...m, backup: false }));
  return [...primaries, ...backups];
}

/** Joins every route with its endpoints and gives it an upstream name that no other route can have. */
export function bindRoutes(services: Services, backends: BackendSet): readonly BoundRoute[] {
  const used = new Set<string>();
  const bound: BoundRoute[] = [];
  for (const server of services.servers) {
    for (const route of server.routes) {
      const base = `nlb_${fnv1a64(`${server.domain}|${server.port}|${route.prefix}`)}`;
      let upstream = base;
      for (let n = 2; used.has(upstream); n++) upstream = `${base}_${n}`;
      used.add(upstream);
      bound.push({ server, route, upstream, members: members(route, backends) });
    }
  }
  return bound;
}

/**
 * The same routes bound to a newer endpoint snapshot, given the routes bound to `before` (of the same routing model).
 * A route's members depend only on its primary's and backup's records, and registry snapshots share unchanged
 * records, so a route whose records are the same objects keeps its BoundRoute (and members array) by reference:
 * one comparison per route instead of re-sorting every endpoint, and later steps skip it by identity.
 */
export function rebindRoutes(
  routes: readonly BoundRoute[],
  before: BackendSet,
  after: BackendSet,
): readonly BoundRoute[] {
  return routes.map((r) => {
    const { primary, backup } = r.route;
    const same =
      before[backendName(primary)] === after[backendName(primary)] &&
      (!backup || before[backendName(backup)] === after[backendName(backup)]);
    return same ? r : { ...r, members: members(r.route, after) };
  });
}
