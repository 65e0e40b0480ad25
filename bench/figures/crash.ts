/**
 * Figure 6, crashes under load: wrk through one route for a fixed time while, a third of the way in, either the
 * nginx master or the controller is SIGKILLed. A master's workers linger on the listening sockets; the controller
 * must retire them and start a new master with the last known sets. A dead controller must cost nothing (nginx
 * outlives it); it is started again at once and adopts the running nginx. Every endpoint stays up, so each failed
 * request is the crash's cost. A second client probes the route every 10 ms with a new connection each time: when
 * the new master first answers, and whether any answer was a 5xx.
 */
import type { Context } from "../lib/context.js";
import { probe } from "../lib/http.js";
import { startLb, type Lb, type Mode } from "../lib/lb.js";
import { sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";

const HOST = "crash.bench.test";
const NAME = "crash-web";
const ENDPOINTS = 2;
const PROBE_EVERY_MS = 10;
/** How long after the kill the probes wait for the route to answer again once the load is over. */
const RECOVERY_LIMIT_MS = 15_000;

export type Fault = "nginx master" | "controller";
export const FAULTS: readonly Fault[] = ["nginx master", "controller"];

export interface CrashRow {
  readonly mode: Mode;
  /** The process SIGKILLed. */
  readonly fault: Fault;
  readonly seconds: number;
  /** When the kill came, in seconds after the load started. */
  readonly killAtS: number;
  readonly wrk: WrkResult;
  readonly probes: number;
  /** Probes refused, reset, timed out or answered other than 200. */
  readonly probesFailed: number;
  /** Probes answered with a 5xx. */
  readonly probes5xx: number;
  /**
   * Any 5xx seen by either client. The backends only answer 200, so every non-2xx wrk counts is nginx's own
   * answer (a 502 or 503).
   */
  readonly any5xx: boolean;
  /**
   * nginx master: from the kill until a new master (a new pid in the pid file) answered a probe. Controller: from
   * the kill until the restarted controller was running. NaN when that did not happen within the bound.
   */
  readonly recoveredMs: number;
  /** The longest span from the kill on without a probe answered 200. */
  readonly longestGapMs: number;
  /** nginx master: the lingering processes the controller said it retired. */
  readonly orphansRetired?: number;
  /** Controller: whether the restarted controller said it adopted the running nginx master. */
  readonly adopted?: boolean;
  readonly error?: string;
}

interface ProbeAt {
  readonly at: number;
  readonly status: number;
  /** The pid in the state dir's nginx.pid just before the probe was sent. */
  readonly masterPid: number;
}

/** Probes the route every 10 ms until `stop()` (bounded by count and time as well). */
function monitor(lb: Lb, maxMs: number) {
  const probes: ProbeAt[] = [];
  let stopped = false;
  const t0 = performance.now();
  const done = (async () => {
    for (let i = 0; i < maxMs / PROBE_EVERY_MS && !stopped && performance.now() - t0 < maxMs; i++) {
      const sent = performance.now();
      const masterPid = await lb.nginxPid();
      const p = await probe(lb.port, HOST, "/", 1000);
      probes.push({ at: p.at, status: p.status, masterPid });
      await sleep(Math.max(0, PROBE_EVERY_MS - (performance.now() - sent)));
    }
  })();
  return {
    probes,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

/** The longest span from `from` without a 200, the last one open-ended until the last probe. */
function longestGap(probes: readonly ProbeAt[], from: number): number {
  let last = from;
  let gap = 0;
  for (const p of probes.filter((x) => x.at >= from)) {
    if (p.status === 200) {
      gap = Math.max(gap, p.at - last);
      last = p.at;
    }
  }
  const end = probes[probes.length - 1]?.at ?? from;
  return Math.max(gap, end - last);
}

async function waitUntil(pred: () => boolean, maxMs: number): Promise<void> {
  const t0 = performance.now();
  while (!pred() && performance.now() - t0 < maxMs) await sleep(20);
}

async function once(ctx: Context, mode: Mode, fault: Fault, seconds: number): Promise<CrashRow> {
  const killAtS = seconds / 3;
  let reg: Registry | null = null;
  let lb: Lb | null = null;
  try {
    reg = await createRegistry(ctx.registry);
    const ips = ctx.backends.ips.slice(0, ENDPOINTS);
    await reg.replace({ [NAME]: Object.fromEntries(ips.map((ip) => [ip, { weight: 1 }])) });
    lb = await startLb({
      routes: [{ domain: HOST, prefix: "/", name: NAME, port: ctx.backends.port }],
      registry: reg,
      mode,
      workers: ctx.workers,
    });
    const live = lb;
    for (let i = 0; i < 100 && (await probe(live.port, HOST)).status !== 200; i++) await sleep(50);
    const oldMaster = await live.nginxPid();
    // kill(0) would signal the benchmark's own process group.
    if (!(oldMaster > 1)) throw new Error(`no nginx master pid in ${live.stateDir}/nginx.pid`);
    const from = live.controller.lines.length;
    const probes = monitor(live, (seconds + RECOVERY_LIMIT_MS / 1000 + 30) * 1000);
    const load = runWrk({ url: `http://127.0.0.1:${live.port}/`, host: HOST, seconds, threads: 1, connections: 20 });
    // The load and the probes are awaited whatever happens to the crash in between.
    try {
      await sleep(killAtS * 1000);
      const killedAt = performance.now();
      let backAt = NaN;
      let adopted = false;
      if (fault === "nginx master") {
        process.kill(oldMaster, "SIGKILL");
      } else {
        const dead = live.controller;
        dead.child.kill("SIGKILL");
        await dead.exited;
        const next = await live.restartController();
        backAt = performance.now();
        adopted = next.find(/adopted the running nginx master/).length > 0;
      }
      const newMasterAnswered = () =>
        probes.probes.find((p) => p.at > killedAt && p.status === 200 && p.masterPid > 0 && p.masterPid !== oldMaster);
      const wrk = await load;
      if (fault === "nginx master") await waitUntil(() => newMasterAnswered() !== undefined, RECOVERY_LIMIT_MS);
      await probes.stop();
      const probes5xx = probes.probes.filter((p) => p.status >= 500).length;
      const retired = live.controller.lines.slice(from).find((l) => l.msg.startsWith("retired nginx processes"));
      const orphans = retired?.["orphans"];
      return {
        mode,
        fault,
        seconds,
        killAtS,
        wrk,
        probes: probes.probes.length,
        probesFailed: probes.probes.filter((p) => p.status !== 200).length,
        probes5xx,
        any5xx: probes5xx > 0 || wrk.errors.non2xx > 0,
        recoveredMs: fault === "nginx master" ? (newMasterAnswered()?.at ?? NaN) - killedAt : backAt - killedAt,
        longestGapMs: longestGap(probes.probes, killedAt),
        ...(fault === "nginx master" ? { orphansRetired: Array.isArray(orphans) ? orphans.length : 0 } : { adopted }),
      };
    } finally {
      await Promise.allSettled([load]);
      await probes.stop();
    }
  } finally {
    await lb?.stop();
    await reg?.close();
  }
}

export async function crash(ctx: Context): Promise<CrashRow[]> {
  const seconds = ctx.quick ? 3 : 10;
  const rows: CrashRow[] = [];
  for (const mode of ctx.modes)
    for (const fault of FAULTS) {
      ctx.log(`crash: ${mode} mode, ${fault} SIGKILLed ${seconds / 3} s into ${seconds} s of load`);
      try {
        rows.push(await once(ctx, mode, fault, seconds));
      } catch (e) {
        // One crash that the controller does not survive is a finding for the report, not the end of the run.
        const wrk: WrkResult = {
          requests: NaN,
          rps: NaN,
          p50ms: NaN,
          p99ms: NaN,
          failed: NaN,
          errors: { connect: NaN, read: NaN, write: NaN, timeout: NaN, non2xx: NaN },
        };
        rows.push({
          mode,
          fault,
          seconds,
          killAtS: seconds / 3,
          wrk,
          probes: 0,
          probesFailed: 0,
          probes5xx: 0,
          any5xx: false,
          recoveredMs: NaN,
          longestGapMs: NaN,
          error: (e as Error).message.split("\n")[0] ?? String(e),
        });
      }
    }
  return rows;
}
