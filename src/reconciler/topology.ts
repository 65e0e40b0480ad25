import { backendName, type Server } from "../model/services.js";
import type { Desired, RoutePlan } from "../render/index.js";
import { planRoutes } from "../render/index.js";

/** One endpoint of a route as nginx uses it: `down` is a weight-0 (drained) endpoint. */
export interface TopologyEndpoint {
  readonly address: string;
  readonly weight: number;
  readonly role: "primary" | "backup" | "down";
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
}

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

/** Derives the key-free topology from a desired state (pure). */
export function topologyOf(desired: Desired): Topology {
  // Grouped in one pass: a filter per server would cost servers x routes (10,000 sites: a quarter second per apply).
  const byServer = new Map<Server, RoutePlan[]>();
  for (const p of planRoutes(desired.services, desired.backends)) {
    const list = byServer.get(p.server);
    if (list) list.push(p);
    else byServer.set(p.server, [p]);
  }
  return {
    servers: desired.services.servers.map((server) => ({
      domain: server.domain,
      port: server.port,
      ...(server.tls ? { tlsPort: server.tls.port } : {}),
      routes: (byServer.get(server) ?? []).map(routeOf),
    })),
  };
}

/** Route views by plan: plans of unchanged routes are shared between snapshots, so their views are too. */
const views = new WeakMap<RoutePlan, TopologyRoute>();

function routeOf(p: RoutePlan): TopologyRoute {
  const known = views.get(p);
  if (known) return known;
  const server = p.server;
  const view: TopologyRoute = {
    prefix: p.route.prefix,
    label: `${server.domain}:${server.port}${p.route.prefix}`,
    upstream: p.upstream,
    backend: `${backendName(p.route.primary)}:${p.route.primary.port}`,
    backendPath: p.route.backendPath,
    ...(p.route.backup ? { backup: `${backendName(p.route.backup)}:${p.route.backup.port}` } : {}),
    endpoints: p.members.map((m) => ({
      address: m.ip.includes(":") ? `[${m.ip}]:${m.port}` : `${m.ip}:${m.port}`,
      weight: m.weight,
      role: m.weight === 0 ? ("down" as const) : m.backup ? ("backup" as const) : ("primary" as const),
    })),
  };
  views.set(p, view);
  return view;
}
