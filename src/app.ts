import { randomBytes } from "node:crypto";
import { ensureSecureStateDir } from "./nginx/state-dir.js";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Controller } from "./controller.js";
import { ensureAccessLog } from "./nginx/access-log.js";
import { ensureTlsPlaceholder, makeTlsPlaceholder } from "./nginx/tls-placeholder.js";
import { NginxApplier } from "./nginx/applier.js";
import { findNginx } from "./nginx/binary.js";
import { isNginxMaster, NginxProcess, readPid, type NginxPaths } from "./nginx/process.js";
import { NginxSupervisor } from "./nginx/supervisor.js";
import { nginxPaths, runRenderOptions, type NginxSettings } from "./nginx/render-options.js";
import { DEFAULT_DEBOUNCE_MS, DEFAULT_MIN_GAP_MS, Reconciler } from "./reconciler/reconciler.js";
import { HealthChecker } from "./health/checker.js";
import { followTargets } from "./health/follow.js";
import { probe } from "./health/probe.js";
import { EjectionWatch } from "./health/ejection-watch.js";
import { readEjections } from "./nginx/ejections-read.js";
import { systemClock } from "./reconciler/clock.js";
import { StatusStore } from "./reconciler/status.js";
import { chooseEndpointsMode, LUA_PACKAGES } from "./nginx/endpoints-mode.js";
import { chooseRoutesMode } from "./nginx/routes-mode.js";
import type { Logger } from "./shared/log.js";
import { collectWhenIdle } from "./shared/idle-gc.js";
import { boundHeapGrowth } from "./shared/heap-growth.js";
import { BackendsFileSource } from "./sources/backends-file.js";
import { startRegistry } from "./sources/first-snapshot.js";
import type { EtcdOptions } from "./sources/registry.js";
import type { WorkerUser } from "./nginx/worker-user.js";
import type { TrafficFeed } from "./admin/traffic-feed.js";
import { startEtcdRoutes, startFileRoutes } from "./sources/routes.js";
import type { EndpointSource } from "./sources/source.js";
import { ControlStore, resolveControl } from "./state/control.js";
import { declaredPorts } from "./sources/declared-ports.js";
import { controlPortReserved } from "./model/reserved-ports.js";
import { StateStore, TableStore, type PersistedState } from "./state/store.js";

/** Everything `nginx-lb run` is told. */
export interface RunOptions {
  readonly services: string;
  readonly stateDir: string;
  readonly nginx?: string;
  readonly backends?: string;
  readonly etcd?: EtcdOptions;
  readonly listenHost?: string;
  /** Re-read services.json when it changes on disk (besides SIGUSR2). Default true. */
  readonly watchServices?: boolean;
  readonly controlPort?: number;
  readonly workerProcesses?: number | "auto";
  /** How long to wait at start for the registry's first answer before serving the last known endpoints. */
  readonly startupGraceMs?: number;
  readonly debounceMs?: number;
  readonly minGapMs?: number;
  /** Where per-route traffic figures come from (the admin server's); started once the endpoints mode is known. */
  readonly traffic?: TrafficFeed;
  /** The operator's JSON access log (absolute path), written by nginx; none when absent. */
  readonly accessLog?: string;
  /** `dynamic`: endpoint changes are pushed to nginx without a reload; `auto` (default) picks it when nginx can. */
  readonly endpointsMode?: "dynamic" | "reload" | "auto";
  /**
   * `dynamic`: routing changes are pushed to nginx's Lua router (needs dynamic endpoints); absent: dynamic wherever
   * the endpoints mode is, else reload (chooseRoutesMode).
   */
  readonly routesMode?: "dynamic" | "reload";
  /** Who nginx's workers run as; only when nginx-lb runs as root (resolveRunConfig decides). */
  readonly nginxUser?: WorkerUser;
  /**
   * How long start-up problems that may heal are waited out: a first nginx start that fails (a port a draining
   * predecessor still holds) is retried this long, then `fatal` is called; a registry silent this long is said
   * loudly (the controller keeps running: etcd coming up later heals it). Unbounded when absent.
   */
  readonly startTimeoutMs?: number;
  /** The routing table from etcd under this prefix (the `etcd` connection) instead of the `services` file. */
  readonly servicesEtcdPrefix?: string;
  /** Dynamic mode: passive outlier ejection settings; the defaults (render/dynamic.ts) when absent. */
  readonly outlier?: NginxSettings["outlier"];
}

/** What the controller cannot recover from after it started; `run` exits 1 with the message. */
export interface ControllerHooks {
  readonly fatal?: (message: string) => void;
}

const seconds = (ms: number) => (ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`);

/** The endpoints mode `run` serves (see chooseEndpointsMode); a refusal of `--endpoints-mode dynamic` stops the start. */
async function endpointsMode(options: RunOptions, nginx: string, log: Logger): Promise<"dynamic" | "reload"> {
  const choice = await chooseEndpointsMode(options.endpointsMode ?? "auto", nginx);
  if (!choice.ok) throw new Error(choice.reason);
  if (choice.fallback !== undefined)
    log.warn(
      { reason: choice.fallback },
      `endpoints mode: reload (nginx cannot load the Lua module; install ${LUA_PACKAGES} for reload-free endpoint changes)`,
    );
  return choice.mode;
}

/**
 * Dynamic routes mode serves TLS ports from one server each with certificates pushed by SNI; nginx still needs a
 * certificate at start for those servers: the state dir's placeholder (never served). It goes to nginx with the
 * rendered files; the state dir keeps it only so the generation stays the same across restarts. So a state dir that
 * cannot hold it now (full, say) does not stop the start: a placeholder made for this run serves, and the apply says
 * why the state dir fails.
 */
async function pushedCertsSettings(
  dir: string,
  log: Logger,
): Promise<Pick<NginxSettings, "certsMode" | "tlsPlaceholder">> {
  const made = await ensureTlsPlaceholder(dir);
  if (!made.ok)
    log.warn(
      { error: made.error },
      "TLS placeholder certificate not kept in the state dir: one made for this run stands in (the next start makes another, and reloads nginx once)",
    );
  const pair = made.ok ? made : makeTlsPlaceholder();
  return { certsMode: "pushed", tlsPlaceholder: { cert: pair.cert, key: pair.key } };
}

export type { Controller } from "./controller.js";

/** Listens on 127.0.0.1:port (0: a port the kernel picks) and closes again: the port it got, null when it could not. */
function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolvePort) => {
    const srv = createServer();
    srv.once("error", () => resolvePort(null));
    srv.listen(port, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolvePort(typeof addr === "object" && addr ? addr.port : null));
    });
  });
}

async function freePort(): Promise<number> {
  const port = await listenOnce(0);
  if (port === null) throw new Error("no free loopback port to listen on");
  return port;
}

/**
 * Whether another process holds the saved control port: it cannot be bound, and no nginx master of this state dir
 * runs (that one holds it, and is adopted).
 */
async function heldByAnother(port: number, paths: NginxPaths): Promise<boolean> {
  if ((await listenOnce(port)) !== null) return false;
  const pid = await readPid(paths.pidFile);
  return pid === null || !(await isNginxMaster(pid, paths));
}

async function endpointSource(options: RunOptions, log: Logger): Promise<EndpointSource | null> {
  if (options.etcd) {
    const { createEndpointSource } = await import("./sources/registry.js");
    return createEndpointSource(options.etcd, log);
  }
  if (options.backends) return new BackendsFileSource(resolve(options.backends), log);
  return null;
}

/** Dynamic mode: nginx's outlier ejections, read once a second into the status (and logged once per change). */
function watchEjections(status: StatusStore, log: Logger, port: number, token: string): EjectionWatch {
  const watch = new EjectionWatch({
    log,
    clock: systemClock,
    read: () => readEjections({ port, token }),
    routeOf: (upstream) =>
      status
        .get()
        .topology?.servers.flatMap((s) => s.routes)
        .find((r) => r.upstream === upstream)?.label,
    onChange: (ejections) => status.update(() => ({ ejections })),
  });
  watch.start();
  return watch;
}

/** The composition root of `nginx-lb run`: builds the parts, wires them, starts them. */
export async function startController(
  options: RunOptions,
  log: Logger,
  hooks: ControllerHooks = {},
): Promise<Controller> {
  // Before the first services read: the heap's peak in a burst of changes stays near its live size.
  boundHeapGrowth();
  const dir = resolve(options.stateDir);
  await ensureSecureStateDir(dir, log, options.nginxUser ?? null);
  // Created by us (0600) before nginx opens it: nginx would create it readable by every local user.
  if (options.accessLog !== undefined) await ensureAccessLog(options.accessLog, log);
  const store = new StateStore(dir);
  const loaded = await store.load();
  if (loaded.kind === "corrupt")
    log.error(
      { file: loaded.file, error: loaded.error, movedTo: loaded.movedTo, moveError: loaded.moveError },
      "state.json is unreadable and was moved aside: the last applied routes and endpoints are unknown; a running nginx keeps serving what it had until the registry answers",
    );
  const saved = loaded.state;
  // Routes in etcd: the state dir's copy of the last table read (TableStore's file) names their ports.
  const routesFile =
    options.etcd && options.servicesEtcdPrefix !== undefined ? new TableStore(dir).file : resolve(options.services);
  const paths = nginxPaths(dir, findNginx(options.nginx));
  const control = await resolveControl(
    new ControlStore(dir),
    saved,
    options.controlPort,
    freePort,
    () => randomBytes(16).toString("hex"),
    await declaredPorts(routesFile, saved.services),
    (port) => heldByAnother(port, paths),
  );
  if (control.moved !== undefined)
    log.warn(
      { from: control.moved, to: control.settings.controlPort },
      control.held
        ? "another process holds the saved control port and no nginx of this state dir runs: moved the control port"
        : "the routing table now claims the control port: moved the control port (the next apply reloads nginx with it)",
    );
  if (control.unusable !== undefined)
    log.error(
      { file: join(dir, "control.json"), error: control.unusable },
      "control.json is unusable: made a new control port and push token (the next apply reloads nginx with them)",
    );
  if (control.saveError !== undefined)
    log.error(
      { err: control.saveError },
      "could not save control.json: a controller restart will reload nginx with a new push token",
    );
  const { controlPort, pushToken } = control.settings;
  const persisted = (desired: { services?: PersistedState["services"]; backends?: PersistedState["backends"] }) =>
    store.save({ version: 1, ...desired, savedAt: new Date().toISOString() });

  const mode = await endpointsMode(options, paths.nginx, log);
  const routes = chooseRoutesMode(options.routesMode, { wanted: options.endpointsMode ?? "auto", mode });
  if (!routes.ok) throw new Error(routes.reason);
  if (routes.fallback !== undefined)
    log.info({ reason: routes.fallback }, `routes mode: reload (${routes.fallback}): routing changes reload nginx`);
  const routesMode = routes.mode;
  const certs = routesMode === "dynamic" ? await pushedCertsSettings(dir, log) : {};
  log.info({ endpointsMode: mode, routesMode, certificates: certs.certsMode ?? "files" }, "modes");
  if (mode === "reload" && options.outlier !== undefined && options.outlier.errors > 0)
    log.warn(
      "--outlier-ejection has no effect in reload mode: nginx's max_fails skips an endpoint after a connection error " +
        "there; outlier ejection needs --endpoints-mode dynamic",
    );
  const traffic = (await options.traffic?.start({ endpointsMode: mode, controlPort, pushToken })) ?? {};
  const renderOptions = runRenderOptions(paths, {
    controlPort,
    pushToken,
    endpointsMode: mode,
    ...(routesMode === "dynamic" ? { routesMode } : {}),
    ...certs,
    ...(options.listenHost ? { listenHost: options.listenHost } : {}),
    ...(options.nginxUser ? { user: { name: options.nginxUser.name, group: options.nginxUser.group } } : {}),
    ...(options.workerProcesses !== undefined ? { workerProcesses: options.workerProcesses } : {}),
    ...traffic,
    ...(options.accessLog !== undefined ? { accessLog: options.accessLog } : {}),
    ...(options.outlier !== undefined ? { outlier: options.outlier } : {}),
  });
  const source = await endpointSource(options, log);
  const routesPrefix = options.etcd ? options.servicesEtcdPrefix : undefined;
  const status = new StatusStore(
    routesPrefix !== undefined ? `etcd:${routesPrefix}` : resolve(options.services),
    source?.name ?? "none",
    new Date(),
  );
  const abort = new AbortController();
  const idleCollection = collectWhenIdle((l) => status.subscribe(l), log, systemClock);
  const nginx = new NginxProcess(paths, log, (why) => supervisor.exited(why));
  const applier = new NginxApplier(paths, nginx, controlPort, log, pushToken);
  const checker = new HealthChecker({
    log,
    clock: systemClock,
    random: Math.random,
    probe,
    onChange: (health) => reconciler.setHealth(health),
  });
  const reconciler = new Reconciler({
    applier: followTargets(applier, checker),
    persist: (desired) => persisted(desired),
    status,
    log,
    mode,
    renderOptions,
    // A push costs about a millisecond and no reload: in dynamic mode changes go out almost at once.
    debounceMs: options.debounceMs ?? (mode === "dynamic" ? 0 : DEFAULT_DEBOUNCE_MS),
    minGapMs: options.minGapMs ?? (mode === "dynamic" ? 10 : DEFAULT_MIN_GAP_MS),
    reservedPorts: controlPortReserved(controlPort, options.listenHost, options.controlPort !== undefined),
    ...(options.startTimeoutMs !== undefined
      ? {
          startTimeoutMs: options.startTimeoutMs,
          gaveUp: (error: string) =>
            hooks.fatal?.(
              `nginx could not start within --start-timeout ${seconds(options.startTimeoutMs ?? 0)}: ${error}`,
            ),
        }
      : {}),
  });
  const supervisor = new NginxSupervisor(
    {
      start: () => nginx.start(),
      probe: () => applier.probe(),
      get masterPid() {
        return nginx.masterPid;
      },
    },
    log,
    { exited: (why) => reconciler.nginxExited(why), restarted: () => reconciler.nginxRunning("nginx restarted") },
  );

  const adopted = await nginx.adopt();
  if (adopted) {
    await applier.probe();
    reconciler.nginxRunning();
  }
  reconciler.restore(saved, adopted);

  // The registry's list starts first: etcd prepares and sends its pages (another process, another core) while the
  // routes are read here, instead of after them. Its wait for the first answer (the grace) is awaited below.
  const registry = source
    ? startRegistry(
        source,
        reconciler,
        {
          graceMs: options.startupGraceMs ?? 3000,
          ...(options.startTimeoutMs !== undefined ? { startTimeoutMs: options.startTimeoutMs } : {}),
          savedEndpoints: saved.backends !== undefined,
          signal: abort.signal,
        },
        log,
      ).then(
        () => null,
        (e: unknown) => e,
      )
    : null;

  const services =
    options.etcd && routesPrefix !== undefined
      ? await startEtcdRoutes({ ...options.etcd, prefix: routesPrefix }, dir, reconciler, status, log, abort.signal, {
          graceMs: options.startupGraceMs ?? 3000,
        })
      : await startFileRoutes(
          resolve(options.services),
          options.watchServices ?? true,
          reconciler,
          status,
          log,
          abort.signal,
        );

  if (registry) {
    const failed = await registry;
    if (failed !== null) throw failed;
  } else {
    reconciler.noRegistry("no --etcd-endpoints and no --backends: every route answers 503");
    log.warn("no registry given (--etcd-endpoints or --backends): every route answers 503 until one is configured");
  }
  reconciler.start();
  const ejections = mode === "dynamic" ? watchEjections(status, log, controlPort, pushToken) : null;

  return {
    status,
    reconciler,
    ...(options.etcd && routesPrefix !== undefined ? { routesEtcd: { ...options.etcd, prefix: routesPrefix } } : {}),
    reloadServices: (reason) => services.reload(reason, true),
    forceReload: async (reason) => {
      await services.reload(reason);
      reconciler.request(reason, true);
    },
    stop: async (stopNginx) => {
      supervisor.stop();
      abort.abort();
      idleCollection.stop();
      checker.stop();
      ejections?.stop();
      reconciler.stop();
      applier.stop();
      await reconciler.idle();
      await applier.settled();
      if (stopNginx) await nginx.stop();
      else nginx.detach();
    },
  };
}
