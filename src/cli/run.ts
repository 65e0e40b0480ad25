import { startController, type Controller } from "../app.js";
import { PRIVILEGED_PORT_HINT } from "../nginx/nginx-errors.js";
import { describeHolder, findPortHolder } from "../nginx/port-holder.js";
import { ownChildren } from "../shared/children.js";
import { createLogger } from "../shared/log.js";
import { startReaper } from "../shared/reaper.js";
import { printProblems } from "./report.js";
import { resolveRunConfig, startFileProblems, USAGE, type RunFlags } from "./run-config.js";

export type { RunFlags } from "./run-config.js";

/** `nginx-lb run`: the daemon. Resolves with the exit code after a graceful stop. */
export async function runCommand(flags: RunFlags): Promise<number> {
  const config = await resolveRunConfig(flags, process.env);
  if (!config.ok) {
    printProblems("nginx-lb run", config.errors, config.warnings);
    return config.errors.some((e) => e.code === USAGE) ? 2 : 1;
  }
  // What cannot heal by waiting stops the start at once, before the admin server or nginx are touched.
  const missing = await startFileProblems(flags, process.env);
  if (missing.length > 0) {
    printProblems("nginx-lb run", missing, config.warnings, null);
    return 1;
  }
  const { controller: options, logLevel } = config.value;
  const log = createLogger({ level: logLevel });
  for (const w of config.warnings) log.warn({ flag: w.path }, w.message);

  const { setupAdmin } = await import("../admin/index.js");
  const admin = await setupAdmin(config.value.admin, log).catch(async (e: unknown) => {
    log.error({ err: (e as Error).message }, await adminRefusal(e));
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
  let controller: Controller;
  // A start-up problem that did not heal within --start-timeout: the controller stops and run exits 1.
  let fatal: string | null = null;
  let onFatal: (message: string) => void = (message) => (fatal ??= message);
  try {
    controller = await startController(
      admin?.traffic !== undefined ? { ...options, traffic: admin.traffic } : options,
      log,
      { fatal: (message) => onFatal(message) },
    );
  } catch (e) {
    // The admin listener and the traffic reader would keep a controller that never started alive, serving nothing.
    log.error({ err: (e as Error).message }, "nginx-lb could not start");
    reaper.stop();
    await admin?.close();
    return 1;
  }
  await admin?.attach(controller);
  log.info({ pid: process.pid, services: options.services, stateDir: options.stateDir }, "nginx-lb is running");
  return new Promise<number>((resolveExit) => {
    // Sources and nginx watchers hold no ref'd handles; this keeps the daemon alive until it is told to stop.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    let stopping = false;
    const stop = (signal: string, failed = false) => {
      if (stopping) return;
      stopping = true;
      if (!failed) log.info({ signal }, "stopping: nginx drains its connections");
      const started = performance.now();
      void Promise.all([controller.stop(true), admin?.close()])
        .then(
          () => {
            log.info({ signal, ms: Math.round(performance.now() - started) }, "nginx-lb stopped");
            return failed ? 1 : 0;
          },
          (e: unknown) => {
            log.error(
              { signal, err: (e as Error).message },
              "nginx-lb stopped with an error; check for nginx processes left",
            );
            return 1;
          },
        )
        .then((code) => {
          clearInterval(keepAlive);
          reaper.stop();
          resolveExit(code);
        });
    };
    onFatal = (message) => {
      log.fatal({ exitCode: 1 }, message);
      stop("start timeout", true);
    };
    if (fatal !== null) onFatal(fatal);
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

/** Why the admin or health listener could not start, in operator words: a held port names its holder. */
async function adminRefusal(e: unknown): Promise<string> {
  const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
  const where = err.port !== undefined ? `${err.address ?? ""}:${err.port}` : "";
  if (err.code === "EADDRINUSE" && err.port !== undefined) {
    const holder = await findPortHolder(err.port);
    return `refusing to start: the admin address ${where} is in use${holder ? `, ${describeHolder(holder)}` : ""}: stop that process (another nginx-lb?) or choose another --admin-listen / --health-listen (off disables the admin server)`;
  }
  if (err.code === "EACCES" && err.port !== undefined)
    return `refusing to start: the admin address ${where}: permission denied: ${PRIVILEGED_PORT_HINT}`;
  if (err.code === "EADDRNOTAVAIL")
    return `refusing to start: the admin address ${where} is not an address of this machine: fix --admin-listen`;
  return "refusing to start: the admin server is misconfigured";
}
