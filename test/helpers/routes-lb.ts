/**
 * A real `nginx-lb run` whose routes come from etcd (`--services-etcd-prefix`), its nginx on its own loopback address
 * (so several serve the same frontend ports) and its admin server on a free port:
 *
 *   const c = await startRoutesLb({ dir, host: "127.0.0.10", etcd: etcd.endpoint, registry, routes });
 *   c.lb;  c.host;  c.admin;   // the Controller, the address nginx listens on, the admin port
 */
import { join } from "node:path";
import { startController, type Controller } from "./controller.js";
import { freePort } from "./nginx.js";

export interface RoutesLb {
  readonly lb: Controller;
  readonly host: string;
  readonly admin: number;
}

export interface RoutesLbOptions {
  /** Holds the state dir (`state-<name>`). */
  readonly dir: string;
  readonly host: string;
  /** The state dir's name; default the host. */
  readonly name?: string;
  readonly etcd: string;
  /** The endpoint registry's prefix and the routing table's. */
  readonly registry: string;
  readonly routes: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  readonly readyMsg?: string;
}

export async function startRoutesLb(o: RoutesLbOptions): Promise<RoutesLb> {
  const admin = await freePort();
  const lb = await startController({
    stateDir: join(o.dir, `state-${o.name ?? o.host}`),
    // Never read: the routes come from etcd.
    services: join(o.dir, "absent.json"),
    args: [
      ...["--listen-host", o.host, "--etcd-endpoints", o.etcd, "--etcd-prefix", o.registry],
      ...["--services-etcd-prefix", o.routes, "--admin-listen", `127.0.0.1:${admin}`],
      ...(o.args ?? []),
    ],
    ...(o.env ? { env: o.env } : {}),
    ...(o.readyMsg ? { readyMsg: o.readyMsg } : {}),
  });
  return { lb, host: o.host, admin };
}
