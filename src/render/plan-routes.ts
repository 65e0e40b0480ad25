import type { BackendSet, Endpoint } from "../model/backends.js";
import type { PushedEndpoint } from "../model/plan.js";
import { backendName, type Route, type Server, type Services } from "../model/services.js";
import { fnv1a64 } from "./hash.js";

/** An endpoint as an upstream `server` line needs it: the same record dynamic mode pushes to the balancer. */
export type UpstreamMember = PushedEndpoint;

/** A route joined with its endpoints and its upstream name; the unit both render modes work from. */
export interface RoutePlan {
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

/**
 * Plans by input identity: one apply renders, diffs, derives the status tree and the pushed sets from the same
 * (services, backends) pair, and with 10,000 routes each plan costs tens of milliseconds. Inputs are immutable, so
 * the memo is invisible; entries go with their inputs.
 */
const memo = new WeakMap<Services, WeakMap<BackendSet, readonly RoutePlan[]>>();

/** Joins every route with its endpoints and gives it an upstream name that no other route can have. */
export function planRoutes(services: Services, backends: BackendSet): readonly RoutePlan[] {
  let byBackends = memo.get(services);
  if (!byBackends) memo.set(services, (byBackends = new WeakMap()));
  const known = byBackends.get(backends);
  if (known) return known;
  const prev = latest.get(services);
  const plans = prev ? replan(prev.plans, prev.backends, backends) : computePlans(services, backends);
  byBackends.set(backends, plans);
  latest.set(services, { backends, plans });
  return plans;
}

/**
 * The last plan per routing model, to re-plan an endpoint change incrementally: a route's members depend only on
 * its primary's and backup's records, and registry snapshots share unchanged records, so an unchanged route keeps
 * its plan (and its members array) by reference: one comparison per route instead of re-sorting every endpoint.
 */
const latest = new WeakMap<Services, { backends: BackendSet; plans: readonly RoutePlan[] }>();

function replan(plans: readonly RoutePlan[], before: BackendSet, after: BackendSet): readonly RoutePlan[] {
  return plans.map((p) => {
    const { primary, backup } = p.route;
    const same =
      before[backendName(primary)] === after[backendName(primary)] &&
      (!backup || before[backendName(backup)] === after[backendName(backup)]);
    return same ? p : { ...p, members: members(p.route, after) };
  });
}

function computePlans(services: Services, backends: BackendSet): readonly RoutePlan[] {
  const used = new Set<string>();
  const plans: RoutePlan[] = [];
  for (const server of services.servers) {
    for (const route of server.routes) {
      const base = `nlb_${fnv1a64(`${server.domain}|${server.port}|${route.prefix}`)}`;
      let upstream = base;
      for (let n = 2; used.has(upstream); n++) upstream = `${base}_${n}`;
      used.add(upstream);
      plans.push({ server, route, upstream, members: members(route, backends) });
    }
  }
  return plans;
}
