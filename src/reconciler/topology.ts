import { backendName } from "../model/services.js";
import type { Desired } from "../render/index.js";
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
  const plans = planRoutes(desired.services, desired.backends);
  return {
    servers: desired.services.servers.map((server) => ({
      domain: server.domain,
      port: server.port,
      ...(server.tls ? { tlsPort: server.tls.port } : {}),
      routes: plans
        .filter((p) => p.server === server)
        .map((p) => ({
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
        })),
    })),
  };
}
