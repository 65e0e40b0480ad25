/**
 * The real nginx in throwaway state dirs, started the way `nginx-lb run` starts it: the production `NginxProcess`
 * (foreground, `daemon off`, in its own process group) and, for nginx-lb's own configs, the production
 * `NginxApplier` with the render options the daemon takes from `runRenderOptions` (control port, push token, pid
 * file, Lua modules, traffic file). What a test exercises is the path users run.
 *
 *   const ngx = await serveNginx({ services: (port) => services("a.test", port, routes), backends });
 *   await ngx.push(nextBackends);      // the applier's decision: a push (dynamic) or a render + reload (reload mode)
 *   await ngx.apply({ services });     // any change; the applier tests, swaps, reloads or pushes
 *   await ngx.reload();                // a forced reload, as SIGHUP to the controller does
 *   await pushEndpoints(ngx.target, body);   // a hand-made push: ngx.target carries the rendered push token
 *   const other = await startStandaloneNginx(conf, dir);   // a config nginx-lb does not render (bench only)
 *   afterAll(cleanupNginx);            // stops every nginx and removes every temp dir this file made
 *
 * `checkConfig(rendered, dir)` runs `nginx -t` (bounded by a timeout) without starting anything. Every test file
 * also gets `afterAll(cleanupNginx)` from test/helpers/setup.ts, so no nginx outlives its test file.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import type { BackendSet } from "../../src/model/backends.js";
import type { Services } from "../../src/model/services.js";
import { NginxApplier } from "../../src/nginx/applier.js";
import { findNginx, nginxTest, type NginxTestResult } from "../../src/nginx/binary.js";
import type { PushTarget } from "../../src/nginx/endpoints-push.js";
import { writeRendered } from "../../src/nginx/files.js";
import { NginxProcess, workerPids, type NginxPaths } from "../../src/nginx/process.js";
import { nginxPaths, runRenderOptions, type NginxSettings } from "../../src/nginx/render-options.js";
import { ensureTlsPlaceholder } from "../../src/nginx/tls-placeholder.js";
import type { ApplyOutcome } from "../../src/reconciler/applier.js";
import { compile, type Target } from "../../src/reconciler/target.js";
import type { Desired, RenderOptions, Rendered } from "../../src/render/index.js";
import { sleep, waitFor } from "./wait.js";

export const NGINX = findNginx();

const quiet = pino({ level: "silent" });
const dirs = new Set<string>();
/** Every nginx started here and not stopped yet, for `cleanupNginx` and the exit hook. */
const running = new Set<{ readonly masterPid: number | null; stop(): Promise<void> }>();
/** Where the run's global teardown looks for masters still running (see test/helpers/global-setup.ts), or null. */
let ledger: string | null = null;

/** A fresh temporary directory, removed by `cleanupNginx`. */
export async function tempDir(prefix = "nginx-lb-test-"): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  dirs.add(d);
  return d;
}

/** A TCP port that was free on `host` a moment ago (the kernel's choice, so concurrent runs do not collide). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = addr && typeof addr === "object" ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** `n` distinct free ports. */
export async function freePorts(n: number, host = "127.0.0.1"): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort(host));
  return [...out];
}

const asRendered = (r: Rendered | string): Rendered =>
  typeof r === "string" ? { conf: r, files: [], generation: "" } : r;

/** Writes the config (and its TLS files) into `dir` and runs the real `nginx -t` on it. */
export async function checkConfig(rendered: Rendered | string, dir: string): Promise<NginxTestResult> {
  const conf = await writeRendered(dir, asRendered(rendered));
  return nginxTest(NGINX, conf, dir);
}

/** The TCP ports a config listens on, with the address to reach each (`listen 127.0.0.1:8080 ssl;` etc.). */
export function listenAddresses(conf: string): { host: string; port: number }[] {
  const seen = new Map<string, { host: string; port: number }>();
  for (const m of conf.matchAll(/^\s*listen\s+(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+|\*):)?(\d+)\b/gm)) {
    const raw = m[1] ?? "127.0.0.1";
    const host = raw === "*" ? "127.0.0.1" : raw.replace(/^\[|\]$/g, "");
    const port = Number(m[2]);
    seen.set(`${host} ${port}`, { host, port });
  }
  return [...seen.values()];
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(500);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
    s.once("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** True while the process exists and is not a zombie. */
function exists(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The production path. These are the only lines that construct NginxProcess or NginxApplier or build a Target:
// when their API changes, adapt it here once.

interface Launch {
  readonly nginx: NginxProcess;
  /** Why nginx exited when nobody asked it to, or null. */
  exitReason(): string | null;
}

function launchProcess(paths: NginxPaths): Launch {
  let why: string | null = null;
  const nginx = new NginxProcess(paths, quiet, (reason) => (why = reason));
  return { nginx, exitReason: () => why };
}

interface Applying extends Launch {
  /**
   * Makes nginx serve `desired` the way the controller does (`force`: reload even when unchanged). `push: false`
   * leaves the endpoint sets out of the target, so a start or reload is not followed by the controller's push: what
   * a new master or new workers serve before it (start-up sets file, shared dict kept across a reload).
   */
  apply(desired: Desired, force: boolean, push: boolean): Promise<ApplyOutcome>;
  pushedVersion(): number | null;
  /** The render options every target is compiled with (`runRenderOptions`, as the daemon's). */
  readonly options: RenderOptions;
  /** Resolves once the applier has written the last pushed sets for a restarted master (endpoints.sets). */
  settled(): Promise<void>;
}

function launchApplier(paths: NginxPaths, settings: NginxSettings, confirmTimeoutMs?: number): Applying {
  const launch = launchProcess(paths);
  const options = runRenderOptions(paths, settings);
  const applier = new NginxApplier(
    paths,
    launch.nginx,
    settings.controlPort,
    quiet,
    settings.pushToken,
    ...(confirmTimeoutMs !== undefined ? [confirmTimeoutMs] : []),
  );
  // As the reconciler does: each target is compiled against the previous one.
  let previous: Target | null = null;
  return {
    ...launch,
    options,
    async apply(desired, force, push) {
      const target = compile(desired, previous, settings.endpointsMode, options);
      const out = await applier.apply(push ? target : { ...target, endpoints: null }, force);
      if (out.result !== "failed") previous = target;
      return out;
    },
    pushedVersion: () => applier.pushedVersion,
    settled: () => applier.settled(),
  };
}

// ---------------------------------------------------------------------------------------------------------------

/**
 * Records every master this process starts as a file in `dir`, so the test run's global teardown can stop any
 * that a crashed or killed test process left behind.
 */
export function recordMastersIn(dir: string): void {
  ledger = dir;
}

async function recordMaster(launch: Launch, dir: string): Promise<void> {
  const pid = launch.nginx.masterPid;
  if (ledger !== null && pid !== null) await writeFile(join(ledger, String(pid)), dir);
}

async function forgetMaster(pid: number | null): Promise<void> {
  if (ledger !== null && pid !== null) await rm(join(ledger, String(pid)), { force: true });
}

/**
 * Stops a started nginx the production way (QUIT, then TERM), and makes sure nothing of it is left: whatever of its
 * process group still runs after that (a master ignoring TERM, a worker) is killed. Resolves when the master and its
 * workers are gone.
 */
async function stopLaunched(launch: Launch): Promise<void> {
  const master = launch.nginx.masterPid;
  const workers = master === null ? [] : await workerPids(master);
  await launch.nginx.stop(5_000);
  if (master === null) return;
  const left = () => [master, ...workers].filter(exists);
  const gone = await waitFor("nginx to exit", () => left().length === 0, 5_000).catch(() => false);
  if (!gone) {
    killGroup(master, "SIGKILL");
    await waitFor(`nginx ${left().join(", ")} to die`, () => left().length === 0, 5_000);
  }
  await forgetMaster(master);
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is gone already.
  }
}

/** The endpoints mode the core suites run in: `NGINX_LB_TEST_ENDPOINTS_MODE=dynamic` runs them against the balancer. */
export const ENDPOINTS_MODE: "reload" | "dynamic" =
  process.env["NGINX_LB_TEST_ENDPOINTS_MODE"] === "dynamic" ? "dynamic" : "reload";

/**
 * The routes mode the core suites run in: `NGINX_LB_TEST_ROUTES_MODE=dynamic` pushes routes to the Lua router (and
 * then runs endpoints dynamic too, which it needs).
 */
export const ROUTES_MODE: "reload" | "dynamic" =
  process.env["NGINX_LB_TEST_ROUTES_MODE"] === "dynamic" ? "dynamic" : "reload";

export interface ServeOptions {
  /** The routes; as a function, it gets a frontend port the harness found free (then `ServedNginx.port`). */
  readonly services: Services | ((frontendPort: number) => Services);
  /** The registry's endpoints. Default: none. */
  readonly backends?: BackendSet;
  /** Default: `ENDPOINTS_MODE` (dynamic when routes are dynamic). */
  readonly mode?: "reload" | "dynamic";
  /** Default: `ROUTES_MODE` when the endpoints mode is dynamic, else reload. */
  readonly routesMode?: "reload" | "dynamic";
  /** `worker_processes`. Default 2, so per-worker state (balancer, passive health) shows as on a multi-core host. */
  readonly workers?: number | "auto";
  /** The push token to render. Default: a random one, as the daemon makes. */
  readonly pushToken?: string;
  /** Default 127.0.0.1 (tests stay on loopback). */
  readonly listenHost?: string;
  /** The file nginx appends per-request traffic records to (as `nginx-lb run` renders it). Default: none. */
  readonly trafficLogFile?: string;
  /** Dynamic mode: count traffic in nginx's shared dict (as `nginx-lb run` renders it there). Default: off. */
  readonly trafficCounters?: boolean;
  /** The state dir. Default: a fresh temp dir. */
  readonly dir?: string;
  /** Dynamic mode: outlier ejection settings (as `nginx-lb run` takes them). Default: the daemon's defaults. */
  readonly outlier?: NginxSettings["outlier"];
  /**
   * "pushed": TLS certificates are served by SNI from what is pushed to the control server (or loaded from the
   * start-up file), with the state dir's placeholder in nginx.conf, as `RenderOptions.certsMode`. Dynamic mode only.
   * Default: "pushed" when routes are pushed (as `nginx-lb run` does; the applier pushes them), else "files".
   */
  readonly certs?: "files" | "pushed";
  /**
   * Runs before nginx starts, with the state dir and the routes (e.g. to place the start-up endpoint sets file a
   * previous controller left there).
   */
  readonly before?: (dir: string, services: Services) => Promise<void>;
  /**
   * Dynamic mode: `false` starts nginx without the controller's first push, so a test sees what a new master serves
   * on its own (the start-up sets file, or 503). Default true.
   */
  readonly push?: boolean;
  /**
   * How long the applier waits for nginx to serve a new config. Default: the applier's (what the daemon uses). Only
   * for benchmark loads far beyond what the daemon's default is sized for (10,000 Lua-balanced upstreams).
   */
  readonly confirmTimeoutMs?: number;
}

/** nginx serving nginx-lb's config through the production applier. */
export class ServedNginx {
  private current: Desired;

  constructor(
    readonly dir: string,
    /** The first server's frontend port. */
    readonly port: number,
    readonly controlPort: number,
    readonly pushToken: string,
    readonly mode: "reload" | "dynamic",
    private readonly launch: Applying,
    desired: Desired,
  ) {
    this.current = desired;
  }

  /** Where and with which token a hand-made push or read reaches this nginx's control server. */
  get target(): PushTarget {
    return { port: this.controlPort, token: this.pushToken };
  }

  /** The options nginx.conf is rendered with: the daemon's (`runRenderOptions`) for this state dir and settings. */
  get renderOptions(): RenderOptions {
    return this.launch.options;
  }

  /** The master pid (0 when not running). */
  get masterPid(): number {
    return this.launch.nginx.masterPid ?? 0;
  }

  /** What nginx was last made to serve. */
  get desired(): Desired {
    return this.current;
  }

  workerPids(): Promise<number[]> {
    return workerPids(this.masterPid);
  }

  /**
   * Applies a change (the missing half stays as it is) through the applier, which pushes, reloads or does nothing,
   * as the controller would. `push: false` (dynamic mode) leaves out the push a start or reload is followed by.
   * Throws with the applier's reason and nginx's error log when the apply failed.
   */
  async apply(next: Partial<Desired> = {}, force = false, push = true): Promise<ApplyOutcome> {
    const desired = {
      services: next.services ?? this.current.services,
      backends: next.backends ?? this.current.backends,
    };
    const out = await this.launch.apply(desired, force, push);
    if (out.result === "failed")
      throw new Error(
        `nginx ${out.action} failed: ${out.error ?? "?"}${this.launch.exitReason() ? ` (${this.launch.exitReason()})` : ""}\n` +
          (await this.errorLog()),
      );
    this.current = desired;
    return out;
  }

  /**
   * New endpoints for the same routes: in dynamic mode the applier pushes them (a set equal to the last one it
   * pushed is not sent again); resolves with the version nginx holds (null in reload mode).
   */
  async push(backends: BackendSet): Promise<number | null> {
    await this.apply({ backends });
    return this.launch.pushedVersion();
  }

  /** A forced reload (the controller's SIGHUP), optionally with new endpoints; in dynamic mode every set is pushed again. */
  async reload(backends?: BackendSet): Promise<void> {
    await this.apply(backends ? { backends } : {}, true);
  }

  /**
   * A forced reload without the push the controller sends after it (dynamic mode): the new workers serve what the
   * shared dict kept across the reload, as they do until that push lands.
   */
  async reloadWithoutPush(): Promise<void> {
    await this.apply({}, true, false);
  }

  /** Resolves once the last pushed sets are written for a restarted master (the applier writes them off the push). */
  settled(): Promise<void> {
    return this.launch.settled();
  }

  errorLog(): Promise<string> {
    return readFile(join(this.dir, "logs/error.log"), "utf8").catch(() => "");
  }

  /** Stops as `nginx-lb run` does on SIGTERM: the sets write in flight lands first, then nginx stops. */
  async stop(): Promise<void> {
    running.delete(this);
    await this.launch.settled();
    await stopLaunched(this.launch);
  }
}

/**
 * Renders `services` and `backends` with the daemon's options, and starts nginx on them through the production
 * applier (`nginx -t`, swap, start, confirm the generation on the control port, then push the sets in dynamic mode).
 */
export async function serveNginx(opts: ServeOptions): Promise<ServedNginx> {
  const dir = opts.dir ?? (await tempDir());
  const controlPort = await freePort();
  const mode = opts.mode ?? (ROUTES_MODE === "dynamic" ? "dynamic" : ENDPOINTS_MODE);
  const routesMode = opts.routesMode ?? (mode === "dynamic" ? ROUTES_MODE : "reload");
  const pushToken = opts.pushToken ?? randomBytes(16).toString("hex");
  let port: number;
  let services: Services;
  if (typeof opts.services === "function") {
    port = await freePort();
    services = opts.services(port);
  } else {
    services = opts.services;
    port = services.servers[0]?.port ?? 0;
  }
  const desired: Desired = { services, backends: opts.backends ?? {} };
  // As `nginx-lb run`: with routes pushed, certificates are pushed too (one server per TLS port).
  const certs = opts.certs ?? (routesMode === "dynamic" ? "pushed" : undefined);
  let tlsPlaceholder: NginxSettings["tlsPlaceholder"];
  if (certs === "pushed") {
    const made = await ensureTlsPlaceholder(dir);
    if (!made.ok) throw new Error(made.error);
    tlsPlaceholder = { cert: made.cert, key: made.key };
  }
  const launch = launchApplier(
    nginxPaths(dir, NGINX),
    {
      controlPort,
      pushToken,
      endpointsMode: mode,
      routesMode,
      listenHost: opts.listenHost ?? "127.0.0.1",
      workerProcesses: opts.workers ?? 2,
      ...(opts.trafficLogFile !== undefined ? { trafficLogFile: opts.trafficLogFile } : {}),
      ...(certs ? { certsMode: certs } : {}),
      ...(tlsPlaceholder ? { tlsPlaceholder } : {}),
      ...(opts.trafficCounters ? { trafficCounters: true } : {}),
      ...(opts.outlier !== undefined ? { outlier: opts.outlier } : {}),
    },
    opts.confirmTimeoutMs,
  );
  const served = new ServedNginx(dir, port, controlPort, pushToken, mode, launch, desired);
  running.add(served);
  try {
    await opts.before?.(dir, services);
    await served.apply(desired, false, opts.push ?? true);
    await recordMaster(launch, dir);
  } catch (e) {
    await served.stop();
    throw e;
  }
  return served;
}

/** nginx on a config nginx-lb does not render (the benchmark's static backends and the original design's config). */
export class StandaloneNginx {
  constructor(
    readonly dir: string,
    private readonly launch: Launch,
  ) {}

  get pid(): number {
    return this.launch.nginx.masterPid ?? 0;
  }

  get masterPid(): number | null {
    return this.launch.nginx.masterPid;
  }

  errorLog(): Promise<string> {
    return readFile(join(this.dir, "logs/error.log"), "utf8").catch(() => "");
  }

  async stop(): Promise<void> {
    running.delete(this);
    await stopLaunched(this.launch);
  }
}

/**
 * Starts nginx (through the production NginxProcess) on a config written into `dir`, whose pid file must be
 * `<dir>/nginx.pid`, and waits until it listens on every address the config names. nginx-lb's own configs are
 * refused: they go through `serveNginx`, so they are rendered with the daemon's options.
 */
export async function startStandaloneNginx(conf: string, dir: string): Promise<StandaloneNginx> {
  if (/^# Rendered by nginx-lb/m.test(conf))
    throw new Error("startStandaloneNginx is for configs nginx-lb does not render: serve nginx-lb's with serveNginx");
  const paths = nginxPaths(dir, NGINX);
  await writeRendered(dir, asRendered(conf));
  const launch = launchProcess(paths);
  const ngx = new StandaloneNginx(dir, launch);
  running.add(ngx);
  try {
    await launch.nginx.start();
    await recordMaster(launch, dir);
    const deadline = Date.now() + 10_000;
    for (const { host, port } of listenAddresses(conf))
      while (!(await canConnect(host, port))) {
        if (launch.nginx.masterPid === null || Date.now() > deadline)
          throw new Error(
            `nginx is not listening on ${host}:${port}: ${launch.exitReason() ?? ""}\n${await ngx.errorLog()}`,
          );
        await sleep(25);
      }
  } catch (e) {
    await ngx.stop();
    throw e;
  }
  return ngx;
}

/** Stops every nginx this test file started and removes its temp dirs. Runs after every test file (setup.ts). */
export async function cleanupNginx(): Promise<void> {
  await Promise.all([...running].map((n) => n.stop()));
  await Promise.all([...dirs].map((d) => rm(d, { recursive: true, force: true })));
  dirs.clear();
}

// nginx runs in its own process group (as in production), so a test process that dies does not take it along:
// on exit, TERM every group this file started (the master stops its workers too).
process.once("exit", () => {
  for (const n of running) if (n.masterPid) killGroup(n.masterPid, "SIGTERM");
});

/**
 * Writes `<dir>/nginx-unconfirmed`, an nginx binary for `--nginx`: nginx as it is, except that a master it starts has
 * a control server that never names the generation it was given, so the controller waits for it as for a master still
 * loading 10,000 sites (a start that a stop can cut short, every time).
 */
export async function unconfirmedNginx(dir: string): Promise<string> {
  const wrapper = join(dir, "nginx-unconfirmed");
  await writeFile(
    wrapper,
    [
      "#!/bin/bash",
      'args=("$@")',
      'for i in "${!args[@]}"; do',
      '  if [[ ${args[i]} == -c && "$*" == *"daemon off;"* ]]; then',
      "    c=${args[i+1]}",
      '    sed -E \'/location = \\/nginx-lb\\/generation/,/}/ s|return 200 "[^"]*"|return 200 "never"|\' "$c" > "$c.unconfirmed"',
      '    args[i+1]="$c.unconfirmed"',
      "  fi",
      "done",
      `exec ${NGINX} "\${args[@]}"`,
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  return wrapper;
}
