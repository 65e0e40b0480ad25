import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { childEnv, ownChildren, trackChild } from "../shared/children.js";
import type { Logger } from "../shared/log.js";
import { namesPrefix, realRetireDeps, retireOrphans, type Prefix } from "./orphans.js";

/** Where a managed nginx keeps its files. */
export interface NginxPaths {
  readonly nginx: string;
  readonly dir: string;
  readonly conf: string;
  readonly pidFile: string;
}

/** Reads the pid of the nginx master from its pid file, or null. */
export async function readPid(pidFile: string): Promise<number | null> {
  try {
    const pid = Number.parseInt((await readFile(pidFile, "utf8")).trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * True when pid is a live (not zombie) nginx master process; with `prefix`, only one whose command line names that
 * state dir or its config (namesPrefix).
 */
export async function isNginxMaster(pid: number, prefix?: Pick<Prefix, "dir" | "conf">): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z" || state === "X") return false;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replace(/\0+$/, "").replace(/\0/g, " ");
    return /nginx: master process|nginx\b.*-c /.test(cmdline) && (!prefix || namesPrefix(cmdline, prefix));
  } catch {
    return false;
  }
}

/** Worker pids of a master, from /proc (used to show that an endpoint change cost no reload). */
export async function workerPids(master: number): Promise<number[]> {
  try {
    const children = await readFile(`/proc/${master}/task/${master}/children`, "utf8");
    return children
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/** How long orphans of our prefix get to finish their requests before SIGKILL: a new master waits for the ports. */
const ORPHAN_GRACE_MS = 3000;

/** True once a worker no longer accepts connections: exited, or retitled "is shutting down" after a reload. */
async function retired(pid: number): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.includes("shutting down") || !cmdline.includes("nginx");
  } catch {
    return true;
  }
}

/**
 * Waits until every listed (pre-reload) worker stopped accepting. Until then some connections still reach the old
 * config, so a change is not live before this. Resolves false on timeout.
 */
export async function waitWorkersRetired(pids: readonly number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let left = [...pids];
  while (left.length > 0) {
    const states = await Promise.all(left.map(retired));
    left = left.filter((_, i) => !states[i]);
    if (left.length === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(2);
  }
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One nginx master: started by us (in the foreground, `daemon off`, in its own process group so it outlives a
 * killed controller) or adopted from the pid file of an earlier controller. Reports unexpected exits.
 */
export class NginxProcess {
  private pid: number | null = null;
  private child: ChildProcess | null = null;
  private stopping = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private starting: Promise<void> = Promise.resolve();

  constructor(
    private readonly paths: NginxPaths,
    private readonly log: Logger,
    private readonly onExit: (why: string) => void,
  ) {}

  /** The master pid, or null when nginx is not running. */
  get masterPid(): number | null {
    return this.pid;
  }

  /**
   * Adopts a running master from the pid file. True when one was found. Only a master of this state dir: after a
   * SIGKILL of ours its pid may be reused, and a master of another prefix (the system's nginx, another instance) must
   * never be signalled, reloaded or stopped by this controller.
   */
  async adopt(): Promise<boolean> {
    const pid = await readPid(this.paths.pidFile);
    if (pid === null) return false;
    if (!(await isNginxMaster(pid, this.paths))) {
      if (await isNginxMaster(pid))
        this.log.warn(
          { pid, pidFile: this.paths.pidFile },
          "the pid file names an nginx master of another state dir: not adopted (a stale pid file, its pid reused)",
        );
      return false;
    }
    this.pid = pid;
    this.stopping = false;
    this.watchAdopted();
    this.log.info({ pid }, "adopted the running nginx master");
    return true;
  }

  /** Starts nginx on the current nginx.conf and waits until its pid file names it. */
  start(): Promise<void> {
    // stop() waits for a start in flight: otherwise a master spawned during shutdown would outlive the controller.
    const starting = this.spawnMaster();
    this.starting = starting.catch(() => undefined);
    return starting;
  }

  private async spawnMaster(): Promise<void> {
    this.stopping = false;
    await this.retireOrphans();
    const { nginx, dir, conf } = this.paths;
    const child = trackChild(
      spawn(nginx, ["-p", `${dir}/`, "-c", conf, "-e", join(dir, "logs/error.log"), "-g", "daemon off;"], {
        detached: true,
        stdio: ["ignore", "ignore", "pipe"],
        env: childEnv(process.env),
      }),
    );
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    this.child = child;
    const exited = new Promise<string>((resolve) =>
      child.once("exit", (code, signal) => resolve(`nginx exited (${signal ?? `code ${code}`}): ${stderr.trim()}`)),
    );
    child.once("error", (e) => this.log.error({ err: e.message }, "could not start nginx"));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const early = await Promise.race([exited, sleep(20).then(() => null)]);
      if (early !== null) {
        this.child = null;
        throw new Error(early);
      }
      const pid = await readPid(this.paths.pidFile);
      if (pid === child.pid) break;
    }
    this.pid = child.pid ?? null;
    void exited.then((why) => {
      if (this.child !== child) return;
      this.child = null;
      this.pid = null;
      if (!this.stopping) this.onExit(why);
    });
    child.unref();
    // Debug only: the caller says it at info once per start ("nginx started" with what it serves, "nginx restarted").
    this.log.debug({ pid: this.pid }, "started nginx");
  }

  /**
   * A master killed with SIGKILL leaves its workers serving a frozen config on the listening sockets, and a stray
   * master of this state dir (pid file deleted, started by hand) holds them too: either keeps a new master from
   * binding. Retire them first, and say which and why. Processes of any other prefix are never touched.
   */
  private async retireOrphans(): Promise<void> {
    const { dir, conf, pidFile } = this.paths;
    const started = performance.now();
    const named = await readPid(pidFile);
    const deadMaster = named !== null && !(await isNginxMaster(named)) ? named : null;
    const r = await retireOrphans({ dir, conf, deadMaster }, ownChildren(), realRetireDeps, ORPHAN_GRACE_MS);
    if (r.found.length === 0) return;
    this.log.warn(
      {
        orphans: r.found.map((o) => ({ pid: o.pid, role: o.role, why: o.why })),
        killed: r.killed,
        ms: Math.round(performance.now() - started),
      },
      "retired nginx processes of this state dir left behind (they would keep the new nginx from binding its ports)",
    );
    if (r.left.length > 0)
      this.log.error(
        { pids: r.left },
        "nginx processes of this state dir survived SIGKILL; the new nginx may fail to bind: check them with ps",
      );
  }

  private watchAdopted(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    const pid = this.pid;
    this.pollTimer = setInterval(() => {
      void isNginxMaster(pid ?? 0, this.paths).then((alive) => {
        if (alive || this.pid !== pid) return;
        if (this.pollTimer) clearInterval(this.pollTimer);
        this.pollTimer = null;
        this.pid = null;
        if (!this.stopping) this.onExit(`adopted nginx master ${pid} is gone`);
      });
    }, 500);
    this.pollTimer.unref();
  }

  /** Asks the master to re-read nginx.conf (SIGHUP): new workers start, old ones drain. */
  reload(): void {
    if (this.pid === null) throw new Error("nginx is not running");
    process.kill(this.pid, "SIGHUP");
  }

  /** Graceful stop (SIGQUIT: connections drain), SIGTERM after the timeout. */
  async stop(timeoutMs = 10_000): Promise<void> {
    await this.starting;
    this.stopping = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    const pid = this.pid;
    if (pid === null) return;
    try {
      process.kill(pid, "SIGQUIT");
    } catch {
      return;
    }
    const deadline = Date.now() + timeoutMs;
    // Our master only: once it is gone its pid may name another process.
    while (Date.now() < deadline && (await isNginxMaster(pid, this.paths))) await sleep(50);
    if (await isNginxMaster(pid, this.paths)) process.kill(pid, "SIGTERM");
    this.pid = null;
  }

  /** Lets the controller exit while nginx keeps serving (used when handing over to a new controller). */
  detach(): void {
    this.stopping = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
  }
}
