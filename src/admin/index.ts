import { Registry } from "prom-client";
import type { Controller } from "../controller.js";
import type { Logger } from "../shared/log.js";
import { DEFAULT_ADMIN_LISTEN, resolveAdminConfig } from "./config.js";
import { createControllerMetrics } from "./metrics.js";
import { startAdmin } from "./server.js";
import { startTrafficReceiver, TrafficStats } from "./traffic.js";

export { AdminConfigError } from "./config.js";

/** The admin flags of `nginx-lb run`. `listen` undefined means the default; "off" disables the admin server. */
export interface AdminFlags {
  readonly listen?: string;
  readonly token?: string;
  readonly tokenFile?: string;
  /** Per-route traffic from nginx access records; default on. Off saves nginx one UDP send per request. */
  readonly traffic?: boolean;
}

/** The admin side of a running controller: the traffic port for the renderer, then `attach` once it runs. */
export interface Admin {
  /** Where nginx sends access records; undefined with traffic off. */
  readonly trafficLogPort: number | undefined;
  attach(controller: Controller): void;
  close(): Promise<void>;
}

/**
 * Starts the admin server and the traffic receiver before the controller, so a bad admin setting stops the start
 * before nginx is touched. Throws AdminConfigError for a setting that must not run (no token off loopback), and
 * the bind error when an explicitly chosen address is taken. Returns null when the admin server is off, or when the
 * default address is taken (serving traffic matters more than observing it; the log says so).
 */
export async function setupAdmin(flags: AdminFlags, log: Logger): Promise<Admin | null> {
  if (flags.listen === "off") return null;
  const config = resolveAdminConfig({
    listen: flags.listen ?? DEFAULT_ADMIN_LISTEN,
    ...(flags.token ? { token: flags.token } : {}),
    ...(flags.tokenFile ? { tokenFile: flags.tokenFile } : {}),
  });
  let server;
  try {
    server = await startAdmin(config, log);
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
  // The same number as the admin TCP port, so the rendered config stays the same across controller restarts.
  const receiver = flags.traffic === false ? null : await startTrafficReceiver(traffic, server.port, log);
  return {
    trafficLogPort: receiver?.port,
    attach(controller) {
      createControllerMetrics(controller.status, metrics);
      server.attach({ status: controller.status, traffic, metrics });
    },
    close: async () => {
      await Promise.all([server.close(), receiver?.close()]);
    },
  };
}
