import { Registry } from "prom-client";
import type { Controller } from "../controller.js";
import type { Logger } from "../shared/log.js";
import { DEFAULT_ADMIN_LISTEN, parseListen, resolveAdminConfig } from "./config.js";
import { startHealth } from "./health.js";
import { createControllerMetrics } from "./metrics.js";
import { startAdmin } from "./server.js";
import { TrafficStats } from "./traffic.js";
import { trafficFeed, type TrafficFeed } from "./traffic-feed.js";

import { localTokenPath, writeLocalToken } from "./local-token.js";
import type { TableClient } from "../sources/services-write.js";
import { resolve } from "node:path";

export { AdminConfigError } from "./config.js";

/** The admin flags of `nginx-lb run`. `listen` undefined means the default; "off" disables the admin server. */
export interface AdminFlags {
  readonly listen?: string;
  /** The state dir: the traffic record file and, without a configured token, the local operator token live there. */
  readonly stateDir: string;
  readonly token?: string;
  readonly tokenFile?: string;
  /** Per-route traffic figures from nginx (counters, or records in reload mode); default on. Off costs nginx nothing. */
  readonly traffic?: boolean;
  /** HOST:PORT of the health listener (`/readyz`, `/healthz` only, no token); none when absent. */
  readonly healthListen?: string;
}

/** The admin side of a running controller: the traffic feed for the controller, then `attach` once it runs. */
export interface Admin {
  /** Where traffic figures come from, started by the controller once it knows how nginx runs; none with traffic off. */
  readonly traffic: TrafficFeed | undefined;
  /**
   * Serves the controller's status, metrics and traffic. Resolves once /api/services can write to the routing table
   * in etcd too (its client, and the etcd client under it, load only for a controller whose routes are there).
   */
  attach(controller: Controller): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the admin server before the controller, so a bad admin setting stops the start
 * before nginx is touched. Throws AdminConfigError for a setting that must not run (no token off loopback), and
 * the bind error when an explicitly chosen address is taken. Returns null when the admin server is off, or when the
 * default address is taken (serving traffic matters more than observing it; the log says so). The health listener
 * (`healthListen`) starts first and is an explicit address: a bind error there stops the start too.
 */
export async function setupAdmin(flags: AdminFlags, log: Logger): Promise<Admin | null> {
  // Its own address and no token: the layer in front probes it even with the admin server off or behind a token.
  const health =
    flags.healthListen === undefined
      ? null
      : await startHealth(parseListen(flags.healthListen, "--health-listen"), log);
  let admin: Admin | null;
  try {
    admin = await setupAdminServer(flags, log);
  } catch (e) {
    await health?.close();
    throw e;
  }
  if (!health) return admin;
  return {
    traffic: admin?.traffic,
    async attach(controller) {
      health.attach(controller.status);
      await admin?.attach(controller);
    },
    close: async () => {
      await Promise.all([admin?.close(), health.close()]);
    },
  };
}

/** The admin server and the traffic feed (setupAdmin without the health listener). */
async function setupAdminServer(flags: AdminFlags, log: Logger): Promise<Admin | null> {
  if (flags.listen === "off") return null;
  const config = resolveAdminConfig({
    listen: flags.listen ?? DEFAULT_ADMIN_LISTEN,
    ...(flags.token ? { token: flags.token } : {}),
    ...(flags.tokenFile ? { tokenFile: flags.tokenFile } : {}),
  });
  const stateDir = resolve(flags.stateDir);
  const localToken = config.token
    ? undefined
    : await writeLocalToken(stateDir).catch((e: unknown) => {
        log.warn(
          { file: localTokenPath(stateDir), err: (e as Error).message },
          "cannot write the local admin token: no event-stream slot is kept for the operator",
        );
        return undefined;
      });
  let server;
  try {
    server = await startAdmin({ ...config, ...(localToken ? { localToken } : {}) }, log);
  } catch (e) {
    if (flags.listen !== undefined) throw e;
    log.error(
      { listen: DEFAULT_ADMIN_LISTEN, err: (e as Error).message },
      "admin server not started (choose another address with --admin-listen); nginx-lb runs without it",
    );
    return null;
  }
  const metrics = new Registry();
  const traffic = new TrafficStats(metrics);
  const feed = flags.traffic === false ? undefined : trafficFeed(traffic, stateDir, log);
  let routesTable: TableClient | undefined;
  return {
    traffic: feed,
    async attach(controller) {
      createControllerMetrics(controller.status, metrics);
      const etcd = controller.routesEtcd;
      routesTable = etcd ? (await import("../sources/services-write.js")).tableClient(etcd) : undefined;
      server.attach({ status: controller.status, traffic, metrics, ...(routesTable ? { routesTable } : {}) });
    },
    close: async () => {
      routesTable?.close();
      await Promise.all([server.close(), feed?.close()]);
    },
  };
}
