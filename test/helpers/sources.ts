/**
 * Drives a `Source` in a test: collects every snapshot, waits for one that matches, captures the source's log lines,
 * and holds or releases its reconnect backoff (so a test can change etcd before the source looks again).
 */
import { spawn, type ChildProcess } from "node:child_process";
import pino from "pino";
import type { Logger } from "../../src/shared/log.js";
import type { Snapshot, Source } from "../../src/sources/source.js";
import { abortableSleep, type RetryOptions } from "../../src/sources/registry-state.js";
import { waitFor } from "./etcd.js";

/** A logger whose JSON lines land in `lines` (and nowhere else). */
export function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
  return { logger, lines };
}

/** Retry options with short delays and a gate: while held, the source waits before reconnecting (up to 60 s). */
export function gatedRetry(): { retry: Partial<RetryOptions>; hold(): void; release(): void; held(): boolean } {
  let open = true;
  let waiting = false;
  return {
    retry: {
      baseMs: 50,
      maxMs: 400,
      random: () => 0.5,
      sleep: async (ms, signal) => {
        await abortableSleep(ms, signal);
        const deadline = Date.now() + 60_000;
        waiting = true;
        while (!open && !signal.aborted && Date.now() < deadline) await abortableSleep(20, signal);
        waiting = false;
      },
    },
    hold: () => void (open = false),
    release: () => void (open = true),
    held: () => waiting && !open,
  };
}

/** A running source: its snapshots so far, a wait for a matching one, and stop. */
export interface Running<T> {
  readonly snapshots: Snapshot<T>[];
  last(): Snapshot<T> | undefined;
  waitFor(what: string, match: (s: Snapshot<T>) => boolean, timeoutMs?: number): Promise<Snapshot<T>>;
  stop(): Promise<void>;
}

/** Starts `source` and records what it emits. */
export function run<T>(source: Source<T>): Running<T> {
  const snapshots: Snapshot<T>[] = [];
  const ac = new AbortController();
  const done = source.start(ac.signal, (s) => void snapshots.push(s));
  const last = () => snapshots[snapshots.length - 1];
  return {
    snapshots,
    last,
    waitFor: async (what, match, timeoutMs = 20_000) => {
      await waitFor(what, () => snapshots.length > 0 && match(last()!), timeoutMs).catch((e: Error) => {
        throw new Error(`${e.message}; last snapshot: ${JSON.stringify(last())}`);
      });
      return last()!;
    },
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** Runs the CLI in one node process (no npx wrapper), so signals reach the registrar itself. */
export function cli(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NGINX_LB_LOG_LEVEL: "info" },
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}
