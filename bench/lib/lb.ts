/**
 * nginx-lb under test: the real `nginx-lb run` (spawned through the test helper, so the benchmark drives it exactly
 * as the end-to-end tests and a user do), a services.json it writes, and the registry it is pointed at.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  startController,
  stopAllControllers,
  writeServices,
  type Controller,
  type LogLine,
} from "../../test/helpers/controller.js";
import { ensureCompiled, runCompiled } from "./build.js";
import { freePort, onCleanup, sleep, tempDir } from "./procs.js";
import type { Registry } from "./registry.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export type Mode = "reload" | "dynamic";

/** A route in services.json terms: served on `domain` under `prefix`, to backend `<app>-<service>` on `port`. */
export interface RouteSpec {
  readonly domain: string;
  readonly prefix: string;
  readonly name: string;
  readonly port: number;
  /** The route's `health_check` block as services.json spells it (active checks on); absent: no checks. */
  readonly healthCheck?: Readonly<Record<string, string | number>>;
}

/** services.json for routes on one frontend port: one server per domain, its routes grouped under it. */
export function servicesJson(routes: readonly RouteSpec[], frontendPort: number): unknown[] {
  const servers = new Map<string, Record<string, unknown>>();
  for (const r of routes) {
    const [app = "", ...rest] = r.name.split("-");
    const entry = servers.get(r.domain) ?? {};
    entry[r.prefix] = {
      app,
      service: rest.join("-"),
      port: r.port,
      ...(r.healthCheck ? { health_check: r.healthCheck } : {}),
    };
    servers.set(r.domain, entry);
  }
  return [...servers].map(([domain, routesOf]) => ({
    domain_name: domain,
    frontend_port: frontendPort,
    routes: routesOf,
  }));
}

/** Whether `nginx-lb run` takes `--endpoints-mode`; set by `availableModes`. */
let modeFlag: boolean | null = null;

/** Which endpoint modes this build's `nginx-lb run` offers (dynamic lands in a parallel branch). */
export async function availableModes(): Promise<Mode[]> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "run", "--help"],
    { cwd: ROOT, timeout: 30_000 },
  );
  modeFlag = stdout.includes("--endpoints-mode");
  return modeFlag ? ["reload", "dynamic"] : ["reload"];
}

export interface Lb {
  /** The controller running now (a new one after `restartController`). */
  readonly controller: Controller;
  readonly port: number;
  readonly servicesFile: string;
  readonly stateDir: string;
  /** The nginx master pid (from the pid file nginx-lb keeps in its state dir). */
  nginxPid(): Promise<number>;
  /** Changes the controller completed since `from` (a line index): reloads, and pushes in dynamic mode. */
  appliesSince(from: number): LogLine[];
  /** Starts `nginx-lb run` again on the same state dir, flags and registry (after the last one died). */
  restartController(): Promise<Controller>;
  stop(): Promise<void>;
}

export interface LbOptions {
  readonly routes: readonly RouteSpec[];
  readonly registry: Registry;
  readonly mode: Mode;
  readonly workers: number;
  /** More `nginx-lb run` flags (e.g. `--no-traffic-log`). */
  readonly args?: readonly string[];
  /**
   * Run with the admin server on (a free loopback port), as `nginx-lb run` does by default. Default off: figures that
   * measure the controller alone keep it out of the way (the test harness turns it off).
   */
  readonly admin?: boolean;
  /** `--routes-mode`: dynamic pushes routing changes to the Lua router (needs the dynamic endpoints mode). */
  readonly routesMode?: Mode;
  /**
   * The controller's environment beside the log level, and the level itself: info unless a tool reads the debug
   * lines (bench/change-phases.ts).
   */
  readonly env?: Readonly<Record<string, string>>;
  /** Wrap the controller's command (test/helpers/controller.ts `wrap`), e.g. to give node a flag. */
  readonly wrap?: readonly string[];
  /** Another checkout's compiled CLI (its dist/ built), to compare with this one's. */
  readonly root?: string;
}

let registered = false;

export async function startLb(o: LbOptions): Promise<Lb> {
  // A controller whose start timed out (no `Lb` to stop it yet) is still one of the helper's running controllers.
  if (!registered) onCleanup(stopAllControllers);
  registered = true;
  const dir = await tempDir("nginx-lb-bench-lb-");
  const servicesFile = join(dir, "services.json");
  const stateDir = join(dir, "state");
  const port = await freePort();
  await writeServices(servicesFile, servicesJson(o.routes, port));
  if (runCompiled) await ensureCompiled();
  const options = {
    compiled: runCompiled,
    services: servicesFile,
    stateDir,
    args: [
      ...o.registry.args,
      "--worker-processes",
      String(o.workers),
      // Always explicit where the flag exists: its default depends on whether nginx can load the Lua module.
      ...((modeFlag ?? (await availableModes()).length > 1) ? ["--endpoints-mode", o.mode] : []),
      ...(o.admin ? ["--admin-listen", `127.0.0.1:${await freePort()}`] : []),
      ...(o.args ?? []),
      ...(o.routesMode ? ["--routes-mode", o.routesMode] : []),
    ],
    // Debug lines cost the controller time on every change; a user runs at info.
    env: { NGINX_LB_LOG_LEVEL: "info", ...o.env },
    ...(o.wrap ? { wrap: o.wrap } : {}),
    ...(o.root ? { root: o.root } : {}),
  };
  let controller = await startController(options);
  const nginxPid = async () => Number((await readFile(join(stateDir, "nginx.pid"), "utf8").catch(() => "0")).trim());
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const pid = await nginxPid();
    await controller.stop();
    // A controller that had to be SIGKILLed leaves its nginx behind: never leave one on a shared machine.
    if (pid > 0 && isAlive(pid)) {
      process.kill(pid, "SIGQUIT");
      for (let i = 0; i < 50 && isAlive(pid); i++) await sleep(100);
      if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
  };
  onCleanup(stop);
  // A first start whose confirmation timed out on a loaded machine is retried as a reload of the nginx it started.
  await controller.waitFor(/"msg":"(nginx started|config applied)"/, 120_000);
  return {
    get controller() {
      return controller;
    },
    port,
    servicesFile,
    stateDir,
    nginxPid,
    appliesSince: (from) =>
      controller.lines.slice(from).filter((l) => l.msg === "config applied" || l.msg === "endpoints pushed"),
    restartController: async () => {
      if (controller.child.exitCode === null && controller.child.signalCode === null)
        throw new Error("the controller is still running: stop or kill it first");
      controller = await startController(options);
      return controller;
    },
    stop,
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
