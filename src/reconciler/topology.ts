import type { EndpointEjection } from "../health/ejections.js";
import { backendName, type Server, type Services } from "../model/services.js";
import type { BoundRoute, ServerSplice } from "../render/index.js";

/** An endpoint's active-check verdict: `unknown` until the first one (served meanwhile). */
export interface TopologyHealth {
  readonly state: "unknown" | "up" | "down";
  readonly since?: string;
  readonly reason?: string;
}

/**
 * One endpoint of a route as nginx uses it: `down` is a weight-0 endpoint (drained in the registry, or down by
 * check: then `health.state` is `down`). `health` is there only for an endpoint under a health check.
 */
export interface TopologyEndpoint {
  readonly address: string;
  readonly weight: number;
  readonly role: "primary" | "backup" | "down";
  readonly health?: TopologyHealth;
  /**
   * Dynamic mode: set while nginx's balancer has ejected the endpoint for failing requests in a row (outlier
   * ejection). Joined in by the status view from the snapshot's `ejections`; the applied topology never has it.
   */
  readonly ejected?: EndpointEjection;
}

/** One route: its prefix, where it goes, and the upstream nginx proxies it to. */
export interface TopologyRoute {
  readonly prefix: string;
  /** `<domain>:<port><prefix>`: the label metrics and the dashboard name the route by. */
  readonly label: string;
  readonly upstream: string;
  readonly backend: string;
  readonly backendPath: string;
  readonly backup?: string;
  /** Empty when nothing can serve: the route answers 503. */
  readonly endpoints: readonly TopologyEndpoint[];
  /** Set when every endpoint is down by check and the route serves them all anyway (fail open). */
  readonly failOpen?: string;
}

/** What the status says about a route that fails open. */
export const FAIL_OPEN =
  "every endpoint is down by health check: all are tried anyway (fail open); check the endpoints and the check";

/** One virtual server. Carries the TLS port only: certificates and keys never leave the model. */
export interface TopologyServer {
  readonly domain: string;
  readonly port: number;
  readonly tlsPort?: number;
  readonly routes: readonly TopologyRoute[];
}

/** What nginx serves, derived from the applied desired state for the status API, metrics and dashboard. */
export interface Topology {
  readonly servers: readonly TopologyServer[];
}

/**
 * The key-free topology of bound routes (pure). `views` holds each route's view, in the order of `routes`; a caller
 * that kept the views of unchanged routes passes them here, others let them be derived.
 */
export function topologyOf(
  services: Services,
  routes: readonly BoundRoute[],
  views: readonly TopologyRoute[] = routes.map(routeView),
): Topology {
  // Grouped in one pass: a filter per server would cost servers x routes (10,000 sites: a quarter second per apply).
  const byServer = new Map<Server, TopologyRoute[]>();
  routes.forEach((r, i) => {
    const view = views[i] ?? routeView(r);
    const list = byServer.get(r.server);
    if (list) list.push(view);
    else byServer.set(r.server, [view]);
  });
  return {
    servers: services.servers.map((server) => ({
      domain: server.domain,
      port: server.port,
      ...(server.tls ? { tlsPort: server.tls.port } : {}),
      routes: byServer.get(server) ?? [],
    })),
  };
}

/**
 * `topologyOf(services, routes, views)` given `previous`, the topology of a model of `beforeLength` servers, and the
 * splice between the two (serverSplice): the head and tail servers' entries are `previous`'s, and only the servers
 * between are built, from `middle` (their routes, in order) and `views` (each one's view).
 */
export function spliceTopology(
  previous: Topology,
  beforeLength: number,
  services: Services,
  cut: ServerSplice,
  middle: readonly BoundRoute[],
  views: readonly TopologyRoute[],
): Topology {
  const between = topologyOf(
    { servers: services.servers.slice(cut.head, services.servers.length - cut.tail) },
    middle,
    views,
  );
  return {
    servers: previous.servers
      .slice(0, cut.head)
      .concat(between.servers, previous.servers.slice(beforeLength - cut.tail, beforeLength)),
  };
}

/**
 * One route as the status API, metrics and dashboard show it. Its endpoints are made from the bound route each time
 * they are read: held, they would repeat the endpoint sets (at 10,000 routes x 10 endpoints, 100,000 objects and
 * their address strings for as long as the routes live), while only a status request or a scrape reads them. A class
 * rather than a literal with a getter: V8 gives each such literal a dictionary of its own (several times the size).
 * The bound route is a private field, so neither a spread nor JSON reaches the server it names (its keys); `toJSON`
 * gives the plain route with its endpoints, and a spread must set `endpoints` itself (view.ts does).
 */
class BoundRouteView implements TopologyRoute {
  readonly #bound: BoundRoute;
  readonly prefix: string;
  readonly label: string;
  readonly upstream: string;
  readonly backend: string;
  readonly backendPath: string;
  declare readonly backup?: string;
  declare readonly failOpen?: string;

  constructor(r: BoundRoute) {
    const server = r.server;
    this.#bound = r;
    this.prefix = r.route.prefix;
    this.label = `${server.domain}:${server.port}${r.route.prefix}`;
    this.upstream = r.upstream;
    this.backend = `${backendName(r.route.primary)}:${r.route.primary.port}`;
    this.backendPath = r.route.backendPath;
    if (r.route.backup) this.backup = `${backendName(r.route.backup)}:${r.route.backup.port}`;
    if (r.failOpen) this.failOpen = FAIL_OPEN;
  }

  get endpoints(): TopologyEndpoint[] {
    const r = this.#bound;
    return r.members.map((m, i) => {
      const health = r.health?.[i];
      return {
        address: m.ip.includes(":") ? `[${m.ip}]:${m.port}` : `${m.ip}:${m.port}`,
        weight: m.weight,
        role: m.weight === 0 ? ("down" as const) : m.backup ? ("backup" as const) : ("primary" as const),
        ...(health ? { health: { ...health } } : {}),
      };
    });
  }

  toJSON(): TopologyRoute {
    return { ...this, endpoints: this.endpoints };
  }
}

/** One route as the status API, metrics and dashboard show it (its endpoints made when read). */
export const routeView = (r: BoundRoute): TopologyRoute => new BoundRouteView(r);
