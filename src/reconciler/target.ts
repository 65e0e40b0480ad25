import type { Delta, EndpointSets, RouteTable } from "../model/plan.js";
import {
  bindRoutes,
  bindServers,
  confShape,
  endpointSets,
  isRoutesDynamic,
  isTlsRouted,
  routeTable,
  rebindRoutes,
  renderConf,
  serverKeys,
  serverSplice,
  spliceRouteTable,
  spliceRoutes,
  type BoundRoute,
  type Desired,
  type RenderOptions,
  type Rendered,
} from "../render/index.js";
import { certTable, spliceCertTable, type CertTable } from "../nginx/certs-push.js";
import type { Server } from "../model/services.js";
import { NO_HEALTH, type Health } from "../health/targets.js";
import { briefDiff, type Change } from "./diff.js";
import { routeView, spliceTopology, topologyOf, type Topology, type TopologyRoute } from "./topology.js";

/** How endpoint changes reach nginx: rendered into nginx.conf (`reload`) or pushed to the Lua balancer (`dynamic`). */
export type EndpointsMode = "reload" | "dynamic";

/** Everything one apply needs, built once by `compile`: nothing downstream joins, renders or compares again. */
export interface Target {
  readonly desired: Desired;
  readonly mode: EndpointsMode;
  /** The options it was rendered with (a later compile with the same object may reuse `rendered`). */
  readonly options: RenderOptions;
  /** Every route joined with its endpoints, in services order. */
  readonly routes: readonly BoundRoute[];
  readonly rendered: Rendered;
  /** Dynamic mode: the sets to push, by upstream name; null in reload mode (the endpoints are in nginx.conf). */
  readonly endpoints: EndpointSets | null;
  /** Dynamic routes mode (`options.routesMode`): the routing table to push; null when routes are rendered. */
  readonly routeTable: RouteTable | null;
  /**
   * Dynamic routes mode with pushed certificates (`isTlsRouted`): every TLS site's certificate and key to push; null
   * otherwise. Holds private keys: never logged or reported.
   */
  readonly certs: CertTable | null;
  /** `endpoints` against the previous target's (plan compares only its keys when nginx holds those); null if unknown. */
  readonly endpointsDelta: Delta<EndpointSets> | null;
  /** `routeTable` against the previous target's, as `endpointsDelta`. */
  readonly routesDelta: Delta<RouteTable> | null;
  /** Each route's status view, in the order of `routes`. */
  readonly views: readonly TopologyRoute[];
  readonly topology: Topology;
  /** The health-check verdicts it was compiled with: an endpoint down by check is out of its set. */
  readonly health: Health;
  /**
   * What this target changes against the `previous` it was compiled with (everything, without one), briefed
   * (`briefChange`): names cut to a few, counts exact.
   */
  readonly change: Change;
}

/**
 * Builds the target of an apply (pure). With a `previous` target of the same routing model, only routes whose
 * endpoint records changed are re-joined (the others keep their BoundRoute and view by reference), and nginx.conf is
 * reused when it cannot differ: in dynamic mode it holds no endpoint, in reload mode no route changed. With a new
 * routing model whose unchanged servers are the previous model's objects (shareServers), those servers keep their
 * routes, views and routing-table values (bindServers), and nginx.conf is reused when its shape did not change
 * (confShape: with routes and certificates pushed, the ports). The result equals a compile without `previous`, except
 * for `change`, which is against `previous`. Health verdicts are an input like the endpoints: a changed verdict
 * re-binds only the routes that check that endpoint. A routing change alone (spliced) costs what it changes.
 */
export function compile(
  desired: Desired,
  previous: Target | null,
  mode: EndpointsMode,
  options: RenderOptions,
  health: Health = NO_HEALTH,
): Target {
  const only = previous !== null ? spliced(desired, previous, mode, options, health) : null;
  if (only !== null) return only;
  const sameServices = previous !== null && previous.desired.services === desired.services;
  const shared =
    previous !== null && !sameServices
      ? bindServers(
          previous.routes,
          desired.services,
          previous.desired.backends,
          desired.backends,
          previous.health,
          health,
        )
      : null;
  const routes = !sameServices
    ? (shared ?? bindRoutes(desired.services, desired.backends, health))
    : previous.desired.backends === desired.backends && previous.health === health
      ? previous.routes
      : rebindRoutes(previous.routes, previous.desired.backends, desired.backends, previous.health, health);
  const sameRoutes = sameServices && (routes === previous.routes || routes.every((r, i) => r === previous.routes[i]));
  const sameConf = previous !== null && previous.mode === mode && previous.options === options;
  const shape = sameConf && !sameServices ? confShape(desired.services, options) : null;
  const reuse =
    sameConf &&
    (sameServices
      ? mode === "dynamic" || sameRoutes
      : shape !== null && shape === confShape(previous.desired.services, options));
  const rendered = reuse
    ? previous.rendered
    : renderConf(desired.services, routes, { ...options, endpointsMode: mode });
  const keptViews = shared && previous ? new Map(previous.routes.map((r, i) => [r, previous.views[i]])) : null;
  const views = sameServices
    ? routes.map((r, i) => (r === previous.routes[i] ? (previous.views[i] ?? routeView(r)) : routeView(r)))
    : routes.map((r) => keptViews?.get(r) ?? routeView(r));
  // The sets of routes kept by reference are the previous target's: only the others are set or removed.
  const setChanges =
    previous?.endpoints && (sameServices || shared) ? upstreamChanges(previous.routes, routes, sameServices) : null;
  const endpoints =
    mode !== "dynamic"
      ? null
      : sameRoutes && previous.endpoints
        ? previous.endpoints
        : setChanges && previous?.endpoints
          ? previous.endpoints.with(setChanges)
          : endpointSets(routes);
  const servers =
    shared && previous ? changedServers(previous.desired.services.servers, desired.services.servers) : null;
  // The table depends on the routing model only (endpoints travel in the sets).
  const table = !pushesRoutes(mode, options)
    ? null
    : sameServices && previous.routeTable
      ? previous.routeTable
      : servers && previous?.routeTable
        ? spliceRouteTable(previous.routeTable, servers.gone, servers.added, routesOf(routes, servers.added))
        : routeTable(desired.services.servers, routes);
  return {
    desired,
    mode,
    options,
    routes,
    rendered,
    endpoints,
    routeTable: table,
    endpointsDelta:
      endpoints && previous?.endpoints && setChanges
        ? { base: previous.endpoints, keys: setChanges.map(([k]) => k) }
        : null,
    routesDelta:
      table && previous?.routeTable && (sameServices || servers)
        ? { base: previous.routeTable, keys: servers ? serverKeys([...servers.added, ...servers.gone]) : [] }
        : null,
    certs: !pushesCerts(mode, options)
      ? null
      : sameServices && previous.certs
        ? previous.certs
        : certTable(desired.services, previous?.certs ?? undefined),
    views,
    topology: sameRoutes ? previous.topology : topologyOf(desired.services, routes, views),
    health,
    change: briefDiff(previous?.routes ?? null, routes),
  };
}

/** Whether the routing table is pushed (routes pushed, which needs dynamic endpoints), else nginx.conf holds the routes. */
function pushesRoutes(mode: EndpointsMode, options: RenderOptions): boolean {
  return mode === "dynamic" && isRoutesDynamic(options);
}

/** Whether certificates are pushed (served by SNI from shared memory), else nginx.conf names their files. */
function pushesCerts(mode: EndpointsMode, options: RenderOptions): boolean {
  return mode === "dynamic" && isTlsRouted(options);
}

/**
 * The endpoint-set changes between two bound route lists where unchanged routes are kept by reference (at the same
 * index when `aligned`: the same routing model; anywhere for a routing change, bindServers): each other route's set,
 * after the removal of each route gone (upstream names are unique, so a name in both is set again). Their names are
 * the upstreams whose sets may differ.
 */
function upstreamChanges(
  before: readonly BoundRoute[],
  after: readonly BoundRoute[],
  aligned: boolean,
): [string, BoundRoute["members"] | undefined][] {
  if (aligned) return after.filter((r, i) => r !== before[i]).map((r) => [r.upstream, r.members]);
  const a = new Set(before);
  const b = new Set(after);
  return [
    ...before.filter((r) => !b.has(r)).map((r): [string, undefined] => [r.upstream, undefined]),
    ...after.filter((r) => !a.has(r)).map((r): [string, BoundRoute["members"]] => [r.upstream, r.members]),
  ];
}

/** The servers only one of two lists has (shareServers keeps the others' objects, and their routes bindServers). */
function changedServers(before: readonly Server[], after: readonly Server[]): { gone: Server[]; added: Server[] } {
  const was = new Set(before);
  const now = new Set(after);
  return { gone: before.filter((s) => !now.has(s)), added: after.filter((s) => !was.has(s)) };
}

/** The routes of `servers` among `routes`, in their order. */
function routesOf(routes: readonly BoundRoute[], servers: readonly Server[]): BoundRoute[] {
  const wanted = new Set(servers);
  return routes.filter((r) => wanted.has(r.server));
}

/**
 * `compile` of a routing change alone (the same endpoints, health, mode and options as `previous`) whose servers differ
 * from `previous`'s between a common head and tail (serverSplice; shareServers keeps unchanged servers' objects):
 * everything of the head and tail servers is `previous`'s, taken by position (routes, views, topology entries, table
 * entries), and only the servers between are bound, viewed, keyed and compared. What stays proportional to the
 * table: pointer copies, a pass over the routes' names (spliceRoutes), the ports (confShape), and the two tables
 * pushed by name (endpoint sets and routing table), built anew in services order since targets are immutable. Equal to a
 * compile without `previous` (target.test.ts checks it); null when that cannot be had this way (a name collision),
 * or when more than the routing model changed: then compile's general path runs.
 */
function spliced(
  desired: Desired,
  previous: Target,
  mode: EndpointsMode,
  options: RenderOptions,
  health: Health,
): Target | null {
  const before = previous.desired.services;
  const services = desired.services;
  if (
    before === services ||
    previous.mode !== mode ||
    previous.options !== options ||
    previous.desired.backends !== desired.backends ||
    previous.health !== health
  )
    return null;
  const cut = serverSplice(before.servers, services.servers);
  const bound = spliceRoutes(previous.routes, services, cut, desired.backends, health);
  if (bound === null) return null;
  const { routes } = bound;
  const shape = confShape(services, options);
  const rendered =
    shape !== null && shape === confShape(before, options)
      ? previous.rendered
      : renderConf(services, routes, { ...options, endpointsMode: mode });
  const keptViews = new Map(bound.before.map((r, i) => [r, previous.views[cut.headRoutes + i]]));
  const middleViews = bound.after.map((r) => keptViews.get(r) ?? routeView(r));
  const views = previous.views
    .slice(0, cut.headRoutes)
    .concat(middleViews, previous.views.slice(previous.views.length - cut.tailRoutes));
  const setChanges = upstreamChanges(bound.before, bound.after, false);
  const endpoints =
    mode !== "dynamic" ? null : previous.endpoints ? previous.endpoints.with(setChanges) : endpointSets(routes);
  const beforeMiddle = before.servers.slice(cut.head, before.servers.length - cut.tail);
  const afterMiddle = services.servers.slice(cut.head, services.servers.length - cut.tail);
  const table = !pushesRoutes(mode, options)
    ? null
    : previous.routeTable
      ? spliceRouteTable(previous.routeTable, beforeMiddle, afterMiddle, bound.after)
      : routeTable(services.servers, routes);
  return {
    desired,
    mode,
    options,
    routes,
    rendered,
    endpoints,
    routeTable: table,
    endpointsDelta:
      endpoints && previous.endpoints ? { base: previous.endpoints, keys: setChanges.map(([k]) => k) } : null,
    routesDelta:
      table && previous.routeTable
        ? { base: previous.routeTable, keys: serverKeys([...afterMiddle, ...beforeMiddle]) }
        : null,
    certs: !pushesCerts(mode, options)
      ? null
      : previous.certs
        ? spliceCertTable(previous.certs, before.servers, services, cut)
        : certTable(services),
    views,
    topology: spliceTopology(previous.topology, before.servers.length, services, cut, bound.after, middleViews),
    health,
    // Routes kept by reference have nothing to report (briefDiff leaves them out): the head and tail are all such.
    change: briefDiff(bound.before, bound.after),
  };
}
