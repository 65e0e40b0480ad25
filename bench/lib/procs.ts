/**
 * Every process the benchmark starts is registered here, so a failed or interrupted run still leaves nothing
 * behind on a shared machine: `killAll()` runs in `finally` and on SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void>)[] = [];
const dirs = new Set<string>();

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Spawns a tracked child; it is killed by `killAll` if still running. */
export function spawnTracked(cmd: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"], ...options });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Resolves with the exit code, SIGKILLing the child when it outlives `timeoutMs` after SIGTERM. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM", timeoutMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill(signal);
  const done = await Promise.race([exited.then(() => true), sleep(timeoutMs).then(() => false)]);
  if (!done) {
    child.kill("SIGKILL");
    await Promise.race([exited, sleep(2000)]);
  }
}

/** Registers an async cleanup (stop a controller, close a client) run by `killAll` in reverse order. */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/** A temporary directory removed by `killAll`. */
export async function tempDir(prefix = "nginx-lb-bench-"): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  dirs.add(d);
  return d;
}

/** Stops everything this run started and removes its temporary directories. */
export async function killAll(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop();
    await fn?.().catch(() => undefined);
  }
  await Promise.all([...children].map((c) => stopChild(c)));
  for (const d of dirs) await rm(d, { recursive: true, force: true }).catch(() => undefined);
  dirs.clear();
}

export { freePort } from "../../test/helpers/nginx.js";

/** Resident and proportional set size of a process in MiB (PSS splits shared pages, so sums over workers add up). */
export async function memoryOf(pid: number): Promise<{ rss: number; pss: number }> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rss: kb("Rss") / 1024, pss: kb("Pss") / 1024 };
}

// Linux's USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s.
const TICK_US = 10_000;

/** CPU time (user + system, microseconds) of these processes so far; a process gone counts 0. */
export async function cpuUs(pids: readonly number[]): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  let total = 0;
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) * TICK_US;
  }
  return total;
}

/** The pids of a process's children (nginx workers of a master). */
export async function childPids(pid: number): Promise<number[]> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  return text.split(/\s+/).filter(Boolean).map(Number);
}
