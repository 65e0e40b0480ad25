import { readFileSync } from "node:fs";
import { startController, type RunOptions } from "../app.js";
import { ownChildren } from "../shared/children.js";
import { createLogger } from "../shared/log.js";
import { startReaper } from "../shared/reaper.js";

export interface RunFlags {
  services: string;
  etcdEndpoints?: string;
  etcdPrefix: string;
  etcdApi: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUsername?: string;
  etcdPasswordFile?: string;
  backends?: string;
  stateDir: string;
  nginx?: string;
  listenHost?: string;
  controlPort?: string;
  workerProcesses?: string;
  logLevel?: string;
  watch?: boolean;
  endpointsMode?: string;
  adminListen?: string;
  adminToken?: string;
  adminTokenFile?: string;
  trafficLog?: boolean;
}

/** The etcd URLs: the flag, or the original image's HOST_IP + ETCD_PORT. */
function etcdUrls(flags: RunFlags): string[] | undefined {
  if (flags.etcdEndpoints)
    return flags.etcdEndpoints
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  const host = process.env["HOST_IP"];
  const port = process.env["ETCD_PORT"];
  if (host && port) return [`http://${host.includes(":") ? `[${host}]` : host}:${port}`];
  return undefined;
}

/** `nginx-lb run`: the daemon. Resolves with the exit code after a graceful stop. */
export async function runCommand(flags: RunFlags): Promise<number> {
  const log = createLogger({ ...(flags.logLevel ? { level: flags.logLevel } : {}) });
  const endpoints = etcdUrls(flags);
  if (flags.etcdApi !== "v3" && flags.etcdApi !== "v2") {
    console.error(`error: --etcd-api must be v3 or v2, got ${JSON.stringify(flags.etcdApi)}`);
    return 1;
  }
  const password =
    process.env["NGINX_LB_ETCD_PASSWORD"] ??
    (flags.etcdPasswordFile ? readFileSync(flags.etcdPasswordFile, "utf8").trim() : undefined);
  const options: RunOptions = {
    services: flags.services,
    stateDir: flags.stateDir,
    ...(flags.nginx ? { nginx: flags.nginx } : {}),
    ...(flags.backends ? { backends: flags.backends } : {}),
    ...(flags.listenHost ? { listenHost: flags.listenHost } : {}),
    watchServices: flags.watch !== false,
    ...(flags.endpointsMode ? { endpointsMode: flags.endpointsMode as "dynamic" | "reload" | "auto" } : {}),
    ...(flags.controlPort ? { controlPort: Number(flags.controlPort) } : {}),
    ...(flags.workerProcesses
      ? { workerProcesses: flags.workerProcesses === "auto" ? "auto" : Number(flags.workerProcesses) }
      : {}),
    ...(endpoints
      ? {
          etcd: {
            endpoints,
            prefix: flags.etcdPrefix,
            api: flags.etcdApi,
            ...(flags.etcdCacert ? { cacert: flags.etcdCacert } : {}),
            ...(flags.etcdCert ? { cert: flags.etcdCert } : {}),
            ...(flags.etcdKey ? { key: flags.etcdKey } : {}),
            ...(flags.etcdUsername ? { username: flags.etcdUsername } : {}),
            ...(password ? { password } : {}),
          },
        }
      : {}),
  };

  const { setupAdmin } = await import("../admin/index.js");
  const admin = await setupAdmin(
    {
      listen: flags.adminListen,
      token: flags.adminToken,
      tokenFile: flags.adminTokenFile,
      traffic: flags.trafficLog !== false,
    },
    log,
  ).catch((e: unknown) => {
    log.error({ err: (e as Error).message }, "refusing to start: the admin server is misconfigured");
    return "refused" as const;
  });
  if (admin === "refused") return 1;

  const reaper = startReaper(ownChildren);
  if (process.pid === 1)
    log.info(
      { reaping: reaper.active },
      reaper.active
        ? "running as pid 1: reaping orphaned processes"
        : "running as pid 1 without the native reaper (build it with npm ci): orphaned processes stay zombies",
    );
  const controller = await startController(
    admin?.trafficLogPort !== undefined ? { ...options, trafficLogPort: admin.trafficLogPort } : options,
    log,
  );
  admin?.attach(controller);
  log.info({ pid: process.pid, services: options.services, stateDir: options.stateDir }, "nginx-lb is running");
  return new Promise<number>((resolveExit) => {
    // Sources and nginx watchers hold no ref'd handles; this keeps the daemon alive until it is told to stop.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping: nginx drains its connections");
      void Promise.all([controller.stop(true), admin?.close()]).then(() => {
        clearInterval(keepAlive);
        reaper.stop();
        resolveExit(0);
      });
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGQUIT", () => stop("SIGQUIT"));
    process.on("SIGUSR2", () => {
      log.info("SIGUSR2: re-reading services.json");
      void controller.reloadServices("SIGUSR2");
    });
    process.on("SIGHUP", () => {
      log.info("SIGHUP: re-rendering and reloading");
      void controller.forceReload("SIGHUP");
    });
    // As pid 1 the kernel ignores signals without a handler; these are ours to decide.
    process.on("SIGPIPE", () => undefined);
    process.on("SIGUSR1", () => log.info(controller.status.get(), "status"));
  });
}
