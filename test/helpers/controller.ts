/**
 * Runs the real `nginx-lb run` as a user would (a separate process, via tsx), with its own state dir and ports.
 *
 *   const lb = await startController({ services, backends, stateDir });  // waits for the first apply
 *   lb.applies("reload");            // applies logged so far, by action
 *   lb.signal("SIGUSR2");
 *   await lb.stop();                 // SIGTERM, waits for exit
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "./wait.js";

export { eventually, sleep } from "./wait.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const running = new Set<Controller>();

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface ControllerOptions {
  readonly stateDir: string;
  readonly services: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** Wrap the command (e.g. `unshare --pid --fork --mount-proc`). */
  readonly wrap?: readonly string[];
  /**
   * Run the compiled CLI (bin/nginx-lb.js, dist/: what the package's `nginx-lb` runs) instead of the sources through
   * tsx; the caller builds dist/ first (bench/lib/build.ts). Default false: tests run the sources as they are.
   */
  readonly compiled?: boolean;
  /**
   * The checkout whose CLI runs (default this one): a benchmark compares this tree's controller with another build's
   * (bench/change-phases.ts --compare).
   */
  readonly root?: string;
  /** Wait for this log message before resolving. Default "nginx-lb is running". */
  readonly readyMsg?: string;
}

export class Controller {
  readonly lines: LogLine[] = [];
  readonly exited: Promise<number | null>;
  constructor(
    readonly child: ChildProcess,
    private readonly wrapped = false,
    /** Its state dir: a failed wait shows the end of nginx's error.log too. */
    private readonly stateDir?: string,
  ) {
    let buf = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.lines.push({ level: 0, msg: line });
        }
      }
    });
    this.exited = new Promise((r) => child.once("exit", (code) => r(code)));
  }

  /** Applies logged so far ("config applied"/"nginx started"), optionally only those with this action. */
  applies(action?: "reload" | "start" | "push"): LogLine[] {
    return this.lines.filter(
      (l) =>
        (l.msg === "config applied" || l.msg === "nginx started" || l.msg === "endpoints pushed") &&
        (!action || l["action"] === action),
    );
  }

  /** Log lines whose message matches. */
  find(re: RegExp): LogLine[] {
    return this.lines.filter((l) => re.test(l.msg) || re.test(JSON.stringify(l)));
  }

  /** Waits until a log line matches (poll with a deadline). */
  async waitFor(re: RegExp, timeoutMs = 15_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const hit = this.find(re)[0];
      if (hit) return hit;
      await sleep(20);
    }
    const nginxLog = this.stateDir
      ? await readFile(join(this.stateDir, "logs/error.log"), "utf8").catch((e: Error) => e.message)
      : "";
    throw new Error(
      `no log line matching ${re} within ${timeoutMs} ms; log:\n${this.lines
        .map((l) => JSON.stringify(l))
        .join("\n")
        .slice(-3000)}${this.stateDir ? `\nnginx's error.log:\n${nginxLog.slice(-1500)}` : ""}`,
    );
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** SIGTERM and wait for the process to exit. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      // A wrapper (unshare --fork) does not pass signals on: signal the controller it runs as well.
      for (const pid of this.wrapped ? childPids(this.child.pid) : []) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // Already gone.
        }
      }
      this.child.kill("SIGTERM");
    }
    const code = await Promise.race([this.exited, sleep(15_000).then(() => "timeout" as const)]);
    if (code === "timeout") {
      this.child.kill("SIGKILL");
      // nginx runs in its own process group, as in production: a controller killed here leaves it serving, holding
      // its ports for every test after this one. Its master names this state dir (pids are reused).
      this.killNginx();
    }
    running.delete(this);
    return code === "timeout" ? null : code;
  }

  private killNginx(): void {
    if (!this.stateDir) return;
    try {
      const pid = Number(readFileSync(join(this.stateDir, "nginx.pid"), "utf8").trim());
      if (pid > 1 && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(this.stateDir))
        process.kill(-pid, "SIGKILL");
    } catch {
      // No pid file, or the master is gone already.
    }
  }
}

function childPids(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Starts `nginx-lb run` and waits until it is running. */
export async function startController(o: ControllerOptions): Promise<Controller> {
  const cmd = [
    ...(o.wrap ?? []),
    process.execPath,
    ...(o.compiled
      ? [join(o.root ?? ROOT, "bin/nginx-lb.js")]
      : ["--import", "tsx", join(o.root ?? ROOT, "src/cli/main.ts")]),
    "run",
    "--services",
    o.services,
    "--state-dir",
    o.stateDir,
    "--listen-host",
    "127.0.0.1",
    "--worker-processes",
    "1",
    ...(o.args ?? []),
  ];
  const [bin = "", ...args] = cmd;
  const child = spawn(bin, args, {
    cwd: o.root ?? ROOT,
    stdio: ["ignore", "ignore", "pipe"],
    // Concurrent test controllers would race for the default admin port 127.0.0.1:9180 (and so render different
    // configs run to run): admin tests pass --admin-listen with a free port, which overrides this.
    env: { ...process.env, NGINX_LB_LOG_LEVEL: "debug", NGINX_LB_ADMIN_LISTEN: "off", ...o.env },
  });
  const c = new Controller(child, (o.wrap ?? []).length > 0, o.stateDir);
  running.add(c);
  await c.waitFor(new RegExp(o.readyMsg ?? "nginx-lb is running"), 30_000);
  return c;
}

/** Stops every controller a test file started (and the nginx each runs). */
export async function stopAllControllers(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop()));
}

/** Writes a services.json with one server and the given routes. */
export async function writeServices(file: string, servers: unknown[]): Promise<void> {
  await writeFile(`${file}.tmp`, JSON.stringify({ version: "0.1", servers }, null, 2));
  const { rename } = await import("node:fs/promises");
  await rename(`${file}.tmp`, file);
}
