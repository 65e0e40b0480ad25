/**
 * The real nginx in throwaway prefixes, for tests. Every nginx started here runs in the foreground as a child of the
 * test process (`daemon off`), so it can be waited for and can never outlive the test file:
 *
 *   const dir = await tempDir();
 *   const port = await freePort();
 *   const ngx = await startNginx(renderNginxConf(desired, { dir, listenHost: "127.0.0.1", ... }), dir);
 *   await ngx.reload(nextRendered);
 *   afterAll(cleanupNginx);          // stops every nginx and removes every temp dir this file made
 *
 * `checkConfig(rendered, dir)` runs `nginx -t` (bounded by a timeout) without starting anything.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNginx, nginxTest, type NginxTestResult } from "../../src/nginx/binary.js";
import { writeRendered } from "../../src/nginx/files.js";
import { workerPids } from "../../src/nginx/process.js";
import { pushEndpoints } from "../../src/nginx/endpoints-push.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { endpointSets } from "../../src/render/dynamic.js";
import { bindRoutes, renderNginxConf, type Desired, type RenderOptions } from "../../src/render/index.js";
import type { Rendered } from "../../src/render/index.js";
import { sleep } from "./wait.js";

export const NGINX = findNginx();

const dirs = new Set<string>();
const running = new Set<RunningNginx>();

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

const confText = (r: Rendered | string) => (typeof r === "string" ? r : r.conf);
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
  for (const m of confText(conf).matchAll(/^\s*listen\s+(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+|\*):)?(\d+)\b/gm)) {
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

async function isServingWorker(pid: number): Promise<boolean> {
  const title = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  return title.includes("worker process") && !title.includes("shutting down");
}

export class RunningNginx {
  private exited: Promise<number | null>;
  private done = false;

  constructor(
    readonly dir: string,
    readonly confFile: string,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) =>
      child.once("exit", (code) => {
        this.done = true;
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get alive(): boolean {
    return !this.done;
  }

  errorLog(): Promise<string> {
    return readFile(join(this.dir, "logs/error.log"), "utf8").catch(() => "");
  }

  /**
   * nginx writes its pid file only after it has bound every listen socket, so this tells a started nginx from one
   * still retrying a taken port (whose address another process may be answering on).
   */
  async waitPidFile(conf: string, timeoutMs = 10_000): Promise<void> {
    const file = /^pid\s+(\S+);/m.exec(conf)?.[1] ?? join(this.dir, "logs/nginx.pid");
    const deadline = Date.now() + timeoutMs;
    while ((await readFile(file, "utf8").catch(() => "")).trim() !== String(this.pid)) {
      if (this.done || Date.now() > deadline)
        throw new Error(`nginx did not start (no pid file ${file}):\n${await this.errorLog()}`);
      await sleep(25);
    }
  }

  /** Resolves once every listen address accepts TCP connections; throws with nginx's error log otherwise. */
  async waitListening(conf: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const { host, port } of listenAddresses(conf)) {
      while (!(await canConnect(host, port))) {
        if (this.done || Date.now() > deadline)
          throw new Error(`nginx is not listening on ${host}:${port}:\n${await this.errorLog()}`);
        await sleep(25);
      }
    }
  }

  /**
   * Writes the next config and sends SIGHUP; resolves when new worker processes run it (nginx starts new workers
   * only after the new config loaded), no old worker accepts connections any more, and every listen address of the
   * new config accepts connections.
   */
  async reload(next: Rendered | string, timeoutMs = 10_000): Promise<void> {
    const before = new Set(await workerPids(this.pid));
    await writeRendered(this.dir, asRendered(next));
    this.child.kill("SIGHUP");
    const deadline = Date.now() + timeoutMs;
    while (!(await workerPids(this.pid)).some((p) => !before.has(p))) {
      if (this.done || Date.now() > deadline)
        throw new Error(`nginx did not start new workers after reload:\n${await this.errorLog()}`);
      await sleep(25);
    }
    // Old workers keep accepting until they handle their QUIT; they retitle themselves "shutting down" right after
    // closing their listen sockets, and from then on every new connection meets the new config.
    for (const old of before) {
      while (await isServingWorker(old)) {
        if (Date.now() > deadline) throw new Error(`old nginx worker ${old} still serving after reload`);
        await sleep(10);
      }
    }
    await this.waitListening(confText(next), Math.max(0, deadline - Date.now()));
  }

  /** Synchronous fast shutdown, for process exit. */
  terminateNow(): void {
    if (!this.done) this.child.kill("SIGTERM");
  }

  /** Graceful stop (QUIT); after `timeoutMs` a TERM, then KILL. Resolves when the master has exited. */
  async stop(timeoutMs = 5_000): Promise<void> {
    running.delete(this);
    if (this.done) return;
    this.child.kill("SIGQUIT");
    const timedOut = Symbol();
    const step = (ms: number) => Promise.race([this.exited, sleep(ms).then(() => timedOut)]);
    if ((await step(timeoutMs)) !== timedOut) return;
    this.child.kill("SIGTERM");
    if ((await step(2_000)) !== timedOut) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }
}

/**
 * Starts nginx in the foreground on a rendered config written into `dir` and waits until it listens on every
 * address the config names. Stop it with `stop()` or `cleanupNginx()`.
 */
export async function startNginx(rendered: Rendered | string, dir: string): Promise<RunningNginx> {
  const confFile = await writeRendered(dir, asRendered(rendered));
  const child = spawn(
    NGINX,
    ["-p", `${dir}/`, "-c", confFile, "-e", join(dir, "logs/error.log"), "-g", "daemon off;"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const ngx = new RunningNginx(dir, confFile, child);
  running.add(ngx);
  try {
    await ngx.waitPidFile(confText(rendered));
    await ngx.waitListening(confText(rendered));
  } catch (e) {
    await ngx.stop();
    throw new Error(`${(e as Error).message}\n${stderr}`);
  }
  return ngx;
}

/** Stops every nginx this test file started and removes its temp dirs. Use as `afterAll(cleanupNginx)`. */
export async function cleanupNginx(): Promise<void> {
  await Promise.all([...running].map((n) => n.stop()));
  await Promise.all([...dirs].map((d) => rm(d, { recursive: true, force: true })));
  dirs.clear();
}

// A crashed test file must not leave nginx behind: TERM makes the master stop its workers too.
process.once("exit", () => {
  for (const n of running) n.terminateNow();
});

/** The endpoints mode the core suites run in: `NGINX_LB_TEST_ENDPOINTS_MODE=dynamic` runs them against the balancer. */
export const ENDPOINTS_MODE: "reload" | "dynamic" =
  process.env["NGINX_LB_TEST_ENDPOINTS_MODE"] === "dynamic" ? "dynamic" : "reload";

/**
 * Renders a desired state in the suite's endpoints mode, starts nginx on it and, in dynamic mode, pushes the endpoint
 * sets the way the daemon does, so one test file checks both modes' behaviour.
 */
export async function serveDesired(
  desired: Desired,
  dir: string,
  options: Partial<RenderOptions> = {},
): Promise<RunningNginx> {
  const base: RenderOptions = { dir, listenHost: "127.0.0.1", workerProcesses: 1, ...options };
  if (ENDPOINTS_MODE === "reload") return startNginx(renderNginxConf(desired, base), dir);
  const controlPort = await freePort();
  const pushToken = randomBytes(16).toString("hex");
  const dynamic = { endpointsMode: "dynamic", controlPort, luaSource: balancerLuaSource(), pushToken } as const;
  const ngx = await startNginx(renderNginxConf(desired, { ...base, ...dynamic }), dir);
  await pushEndpoints(
    { port: controlPort, token: pushToken },
    { version: 1, upstreams: endpointSets(bindRoutes(desired.services, desired.backends)) },
  );
  return ngx;
}
