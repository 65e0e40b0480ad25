import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { BackendSet } from "./model/backends.js";
import { formatProblem } from "./model/problem.js";
import { NginxApplier } from "./nginx/applier.js";
import { findNginx } from "./nginx/binary.js";
import { NginxProcess } from "./nginx/process.js";
import { DEFAULT_DEBOUNCE_MS, DEFAULT_MIN_GAP_MS, Reconciler } from "./reconciler/reconciler.js";
import { StatusStore } from "./reconciler/status.js";
import { endpointSets } from "./render/dynamic.js";
import { planRoutes, renderNginxConf, type Rendered } from "./render/index.js";
import type { Services } from "./model/services.js";
import { detectLuaSupport } from "./nginx/lua-support.js";
import { balancerLuaSource } from "./nginx/lua-source.js";
import type { Logger } from "./shared/log.js";
import { BackendsFileSource } from "./sources/backends-file.js";
import type { EtcdOptions } from "./sources/registry.js";
import { ServicesFileSource } from "./sources/services-source.js";
import type { EndpointSource } from "./sources/source.js";
import { StateStore } from "./state/store.js";

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
  /** File nginx appends per-request access records to (per-route traffic); none when absent. */
  readonly trafficLogFile?: string;
  /** `dynamic`: endpoint changes are pushed to nginx without a reload; `auto` (default) picks it when nginx can. */
  readonly endpointsMode?: "dynamic" | "reload" | "auto";
}

/** Decides the endpoints mode: dynamic when asked for or when nginx can load the Lua module, else reload. */
async function chooseEndpointsMode(options: RunOptions, nginx: string, log: Logger): Promise<"dynamic" | "reload"> {
  const wanted = options.endpointsMode ?? "auto";
  if (wanted === "reload") return "reload";
  const support = await detectLuaSupport(nginx);
  if (support.ok) return "dynamic";
  if (wanted === "dynamic")
    throw new Error(
      `--endpoints-mode dynamic needs nginx's Lua module (apt-get install libnginx-mod-http-lua lua-resty-core): ${support.reason}`,
    );
  log.warn(
    { reason: support.reason },
    "endpoints mode: reload (nginx cannot load the Lua module; install libnginx-mod-http-lua and lua-resty-core for reload-free endpoint changes)",
  );
  return "reload";
}

/** A running controller: its status and a way to stop it. */
export interface Controller {
  readonly status: StatusStore;
  readonly reconciler: Reconciler;
  /** Re-reads services.json (SIGUSR2). */
  reloadServices(reason: string): Promise<void>;
  /** Re-reads and reloads even if unchanged (SIGHUP). */
  forceReload(reason: string): Promise<void>;
  /** Stops sources; with `stopNginx` also stops nginx gracefully (SIGTERM), otherwise leaves it serving. */
  stop(stopNginx: boolean): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolvePort(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

async function endpointSource(options: RunOptions, log: Logger): Promise<EndpointSource | null> {
  if (options.etcd) {
    const { createEndpointSource } = await import("./sources/registry.js");
    return createEndpointSource(options.etcd, log);
  }
  if (options.backends) return new BackendsFileSource(resolve(options.backends), log);
  return null;
}

/** The composition root of `nginx-lb run`: builds the parts, wires them, starts them. */
export async function startController(options: RunOptions, log: Logger): Promise<Controller> {
  const dir = resolve(options.stateDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const store = new StateStore(dir);
  const saved = await store.load();
  const controlPort = options.controlPort ?? saved.controlPort ?? (await freePort());
  const pushToken = saved.pushToken ?? randomBytes(16).toString("hex");
  if (saved.controlPort !== controlPort || saved.pushToken !== pushToken)
    await store.save({ ...saved, controlPort, pushToken });

  const paths = {
    nginx: findNginx(options.nginx),
    dir,
    conf: join(dir, "nginx.conf"),
    pidFile: join(dir, "nginx.pid"),
  };
  const mode = await chooseEndpointsMode(options, paths.nginx, log);
  const luaSource = mode === "dynamic" ? balancerLuaSource() : undefined;
  const source = await endpointSource(options, log);
  const status = new StatusStore(resolve(options.services), source?.name ?? "none", new Date());
  const abort = new AbortController();
  let stopping = false;
  let restartDelay = 0;

  const onNginxExit = (why: string) => {
    log.error({ why }, "nginx exited unexpectedly; restarting it on the last good config");
    status.update((s) => ({ nginx: { ...s.nginx, running: false, pid: null, lastError: why } }));
    restartDelay = Math.min(Math.max(restartDelay * 2, 100), 10_000);
    setTimeout(() => void restartNginx(), restartDelay).unref();
  };
  const nginx = new NginxProcess(paths, log, onNginxExit);
  const applier = new NginxApplier(paths, nginx, controlPort, log, pushToken);
  const markRunning = () =>
    status.update((s) => ({
      nginx: {
        ...s.nginx,
        running: nginx.masterPid !== null,
        pid: nginx.masterPid,
        generation: applier.liveGeneration,
        endpointsMode: mode,
        pushedVersion: applier.pushedVersion,
      },
    }));

  const restartNginx = async () => {
    if (stopping) return;
    try {
      await nginx.start();
      await applier.probe();
      restartDelay = 0;
      markRunning();
      reconciler.request("nginx restarted");
    } catch (e) {
      onNginxExit((e as Error).message);
    }
  };

  let lastRender: { services: Services; rendered: Rendered } | null = null;
  const reconciler = new Reconciler({
    render: (desired) => {
      // In dynamic mode nginx.conf holds no endpoint: an endpoint-only change reuses the last render.
      const reuse = mode === "dynamic" && lastRender?.services === desired.services ? lastRender.rendered : null;
      const rendered =
        reuse ??
        renderNginxConf(desired, {
          dir,
          controlPort,
          pidFile: paths.pidFile,
          endpointsMode: mode,
          ...(luaSource ? { luaSource } : {}),
          ...(options.listenHost ? { listenHost: options.listenHost } : {}),
          ...(options.workerProcesses !== undefined ? { workerProcesses: options.workerProcesses } : {}),
          ...(options.trafficLogFile !== undefined ? { trafficLogFile: options.trafficLogFile } : {}),
        });
      lastRender = { services: desired.services, rendered };
      const endpoints = mode === "dynamic" ? endpointSets(planRoutes(desired.services, desired.backends)) : null;
      return { rendered, endpoints };
    },
    apply: async (rendered, force) => {
      const out = await applier.apply(rendered, force);
      markRunning();
      return out;
    },
    persist: async (desired) =>
      store.save({
        version: 1,
        controlPort,
        pushToken,
        services: desired.services,
        backends: desired.backends,
        savedAt: new Date().toISOString(),
      }),
    status,
    log,
    // A push costs about a millisecond and no reload: in dynamic mode changes go out almost at once.
    debounceMs: options.debounceMs ?? (mode === "dynamic" ? 0 : DEFAULT_DEBOUNCE_MS),
    minGapMs: options.minGapMs ?? (mode === "dynamic" ? 10 : DEFAULT_MIN_GAP_MS),
  });

  if (await nginx.adopt()) {
    await applier.probe();
    markRunning();
  }
  if (saved.services) reconciler.setServices(saved.services, "last applied state");
  if (saved.backends) reconciler.setBackends(saved.backends, "last applied state");

  const services = new ServicesFileSource(resolve(options.services), options.watchServices ?? true);
  await services.start(
    abort.signal,
    (snap) => {
      status.update(() => ({
        services: {
          file: services.file,
          valid: true,
          errors: [],
          warnings: snap.warnings,
          loadedAt: new Date().toISOString(),
        },
      }));
      for (const w of snap.warnings) log.warn({ file: services.file }, `services.json: ${formatProblem(w)}`);
      reconciler.setServices(snap.value, `services.json: ${snap.origin}`);
    },
    (errors, warnings) => {
      status.update(() => ({
        services: { file: services.file, valid: false, errors, warnings, loadedAt: new Date().toISOString() },
      }));
      log.error(
        { file: services.file, errors: errors.map(formatProblem) },
        "services.json is invalid; the last valid routes stay in force",
      );
    },
  );

  if (source) {
    let first: () => void = () => undefined;
    const firstSnapshot = new Promise<void>((r) => (first = r));
    void source
      .start(
        abort.signal,
        (snap) => {
          status.update(() => ({
            registry: {
              kind: source.name,
              connected: snap.connected,
              origin: snap.origin,
              warnings: snap.warnings,
              valid: true,
              errors: [],
            },
          }));
          if (snap.connected) {
            reconciler.setBackends(snap.value, `registry: ${snap.origin}`);
            first();
          }
        },
        (errors, warnings) => status.update((s) => ({ registry: { ...s.registry, valid: false, errors, warnings } })),
      )
      .catch((e: unknown) => log.error({ err: (e as Error).message }, "endpoint source stopped"));
    const grace = options.startupGraceMs ?? 3000;
    const timedOut = await Promise.race([
      firstSnapshot.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), grace).unref()),
    ]);
    if (timedOut)
      log.warn(
        { registry: source.name, endpoints: saved.backends ? "last known (state dir)" : "none yet" },
        "the registry did not answer in time; serving the last known endpoints while retrying",
      );
  } else {
    const empty: BackendSet = {};
    reconciler.setBackends(empty, "no registry");
    status.update(() => ({
      registry: {
        kind: "none",
        connected: false,
        origin: "no --etcd-endpoints and no --backends: every route answers 503",
        warnings: [],
        valid: true,
        errors: [],
      },
    }));
    log.warn("no registry given (--etcd-endpoints or --backends): every route answers 503 until one is configured");
  }
  reconciler.start();

  return {
    status,
    reconciler,
    reloadServices: (reason) => services.reload(reason),
    forceReload: async (reason) => {
      await services.reload(reason);
      reconciler.request(reason, true);
    },
    stop: async (stopNginx) => {
      stopping = true;
      abort.abort();
      reconciler.stop();
      await reconciler.idle();
      if (stopNginx) await nginx.stop();
      else nginx.detach();
    },
  };
}
