/**
 * The prober alone at scale: the production HealthChecker and probe against `--endpoints` loopback listeners (10 ips x
 * n ports on one static nginx answering 200), every endpoint checked with `"health_check": {}` (GET /healthz every 2 s,
 * timeout 1 s). Reports probes finished per second against those due, and this process's CPU per probe.
 *
 *   node --import tsx bench/probe-cost.ts [--endpoints 10000] [--seconds 20] [--concurrency n]
 */
import { parseArgs } from "node:util";
import pino from "pino";
import { HealthChecker } from "../src/health/checker.js";
import { probe } from "../src/health/probe.js";
import type { ProbeResult } from "../src/health/state.js";
import type { BackendSet } from "../src/model/backends.js";
import { parseServices } from "../src/model/services.js";
import { systemClock } from "../src/reconciler/clock.js";
import { loopbackIps } from "../test/helpers/backends.js";
import { childPids, cpuUs, killAll, sleep } from "./lib/procs.js";
import { startListeners } from "./lib/static-nginx.js";

const { values } = parseArgs({
  options: {
    endpoints: { type: "string", default: "10000" },
    seconds: { type: "string", default: "20" },
    /** A fixed cap on probes in flight instead of the checker's own. */
    concurrency: { type: "string" },
  },
});
const endpoints = Math.min(20_000, Math.max(10, Number(values.endpoints)));
const seconds = Math.min(120, Math.max(2, Number(values.seconds)));
const IPS = 10;
const INTERVAL_S = 2;

async function main(): Promise<void> {
  const listeners = await startListeners(loopbackIps(IPS), Math.ceil(endpoints / IPS));
  const routes = listeners.ports.map((port, i) => [`/r${i}`, { app: `a${i}`, service: "s", port, health_check: {} }]);
  const parsed = parseServices({ servers: [{ domain_name: "x.test", routes: Object.fromEntries(routes) }] });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const backends: BackendSet = Object.fromEntries(
    listeners.ports.map((_, i) => [`a${i}-s`, Object.fromEntries(listeners.ips.map((ip) => [ip, { weight: 1 }]))]),
  );
  let [done, failed, waitedMs] = [0, 0, 0];
  const reasons = new Map<string, number>();
  const counted = async (ip: string, port: number, check: Parameters<typeof probe>[2]): Promise<ProbeResult> => {
    const t = performance.now();
    const r = await probe(ip, port, check);
    waitedMs += performance.now() - t;
    done++;
    if (!r.ok) {
      failed++;
      reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
    }
    return r;
  };
  const checker = new HealthChecker({
    log: pino({ level: "error" }),
    clock: systemClock,
    random: Math.random,
    probe: counted,
    onChange: () => undefined,
    ...(values.concurrency ? { concurrency: Math.max(1, Number(values.concurrency)) } : {}),
  });
  try {
    checker.follow(parsed.value, backends);
    console.log(`${checker.targets} endpoints, interval ${INTERVAL_S}s; settling one interval`);
    await sleep(INTERVAL_S * 1000 + 500);
    const nginxPids = [listeners.nginx.pid, ...(await childPids(listeners.nginx.pid))];
    const [d0, f0, w0, n0] = [done, failed, waitedMs, await cpuUs(nginxPids)];
    const [c0, t0] = [process.cpuUsage(), performance.now()];
    await sleep(seconds * 1000);
    const c1 = process.cpuUsage(c0);
    const nginxUs = (await cpuUs(nginxPids)) - n0;
    const s = (performance.now() - t0) / 1000;
    const ownUs = c1.user + c1.system;
    const n = done - d0;
    console.log(
      JSON.stringify({
        endpoints: checker.targets,
        seconds: Number(s.toFixed(1)),
        probesPerS: Math.round(n / s),
        duePerS: Math.round(checker.targets / INTERVAL_S),
        failedPerS: Math.round((failed - f0) / s),
        cpuSPerS: Number((ownUs / 1e6 / s).toFixed(3)),
        cpuUsPerProbe: Math.round(ownUs / Math.max(1, n)),
        userUsPerProbe: Math.round(c1.user / Math.max(1, n)),
        probeMs: Number(((waitedMs - w0) / Math.max(1, n)).toFixed(1)),
        nginxCpuSPerS: Number((nginxUs / 1e6 / s).toFixed(3)),
        reasons: Object.fromEntries(reasons),
      }),
    );
  } finally {
    checker.stop();
    await sleep(1500);
    await killAll();
  }
}

main().catch(async (e: unknown) => {
  console.error(e);
  await killAll();
  process.exitCode = 1;
});
