/**
 * A bounded request loop (count and time) through nginx that records every failure, for fault tests: what an
 * operator measures as "requests failed during the fault".
 *
 *   const traffic = load(`http://127.0.0.1:${port}/`, { host: "a.test", count: 3000, concurrency: 4, maxMs: 20_000 });
 *   ... inject the fault ...
 *   await traffic.stop();
 *   expect(traffic.failures).toEqual([]);
 */
import type { Agent } from "node:http";
import { get } from "./http.js";

export interface LoadOptions {
  /** Host header sent with every request. */
  readonly host: string;
  /** At most this many requests in all. */
  readonly count: number;
  readonly concurrency: number;
  /** At most this long, whatever the count. */
  readonly maxMs: number;
  /** Per-request deadline. Default 5,000 ms. */
  readonly timeoutMs?: number;
  /** An agent (e.g. a keepalive one); default a new connection per request. */
  readonly agent?: Agent;
  /**
   * Open loop: start a request every `everyMs` whatever the ones in flight do (at most `concurrency` in flight; a
   * start due while that many wait is skipped). Without it, `concurrency` workers each send the next request when
   * their last one ended, so one slow endpoint holds every worker at once and the loop sees time in waves.
   */
  readonly everyMs?: number;
}

/** One request of the loop: when it started (`performance.now()`), how long it took, and how it ended. */
export interface Sample {
  readonly start: number;
  readonly ms: number;
  readonly outcome: "ok" | "failed" | "timeout";
}

export interface Load {
  /** One line per failed request: a non-200 status with the start of its body, or the connection error. */
  readonly failures: string[];
  /** Every request so far, in the order they ended. */
  readonly samples: Sample[];
  /** Requests sent so far. */
  readonly done: number;
  readonly finished: Promise<void>;
  /** Ends the loop after the requests in flight; resolves when they are done. */
  stop(): Promise<void>;
}

export function load(url: string, opts: LoadOptions): Load {
  const failures: string[] = [];
  const samples: Sample[] = [];
  let done = 0;
  let stopped = false;
  const deadline = Date.now() + opts.maxMs;
  const more = () => !stopped && done < opts.count && Date.now() < deadline;
  const one = async () => {
    done++;
    const start = performance.now();
    let outcome: Sample["outcome"] = "ok";
    try {
      const r = await get(url, {
        host: opts.host,
        timeoutMs: opts.timeoutMs ?? 5000,
        ...(opts.agent ? { agent: opts.agent } : {}),
      });
      if (r.status !== 200) {
        failures.push(`status ${r.status}: ${r.body.slice(0, 100)}`);
        outcome = "failed";
      }
    } catch (e) {
      failures.push(String(e));
      // http.ts's get rejects with "timeout: <url>" when the deadline passed.
      outcome = String(e).includes("timeout: ") ? "timeout" : "failed";
    }
    samples.push({ start, ms: performance.now() - start, outcome });
  };
  const worker = async () => {
    while (more()) await one();
  };
  const paced = async (everyMs: number) => {
    const inFlight = new Set<Promise<void>>();
    for (let next = performance.now(); more(); next += everyMs) {
      if (inFlight.size < opts.concurrency) {
        const p: Promise<void> = one().finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, next + everyMs - performance.now())));
    }
    await Promise.all(inFlight);
  };
  const finished = (
    opts.everyMs !== undefined ? paced(opts.everyMs) : Promise.all(Array.from({ length: opts.concurrency }, worker))
  ).then(() => undefined);
  return {
    failures,
    samples,
    get done() {
      return done;
    },
    finished,
    stop: () => {
      stopped = true;
      return finished;
    },
  };
}
