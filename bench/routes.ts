/**
 * Dynamic routes benchmark (one run, the real daemon, the watched backends file, static nginx backends): at 10 and at
 * 10,000 sites (x 10 endpoints), per routes mode (dynamic endpoints in both):
 *  - cold start: controller start -> the last site of the table answers;
 *  - a routing change (a new site written to services.json, as a config centre does) -> its first request answered,
 *    p50/p99 over the changes, and the reloads they cost.
 * Usage: npx tsx bench/routes.ts [--changes 20] [--sizes 10,10000] [--modes dynamic,reload]
 */
import { writeServices } from "../test/helpers/controller.js";
import { loopbackIps } from "../test/helpers/backends.js";
import { fillerEndpoints } from "./lib/context.js";
import { probe } from "./lib/http.js";
import { servicesJson, startLb, type Lb, type Mode, type RouteSpec } from "./lib/lb.js";
import { childPids, killAll, memoryOf, sleep } from "./lib/procs.js";
import { createRegistry } from "./lib/registry.js";
import { startStaticBackends } from "./lib/static-nginx.js";
import { percentile } from "./lib/stats.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? dflt) : dflt;
};
const CHANGES = Number(arg("changes", "20"));
const SIZES = arg("sizes", "10,10000").split(",").map(Number);
const MODES = arg("modes", "dynamic,reload").split(",") as Mode[];

async function until(fn: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await fn()) return true;
    await sleep(2);
  }
  return false;
}

async function main(): Promise<void> {
  const backends = await startStaticBackends(loopbackIps(1), 1);
  const live = { ip: backends.ips[0] ?? "", port: backends.port };
  for (const n of SIZES)
    for (const routesMode of MODES) {
      // n sites of one route each, 10 filler endpoints per site; the last site is live (its endpoint answers).
      const routes: RouteSpec[] = [];
      const set: Record<string, Record<string, { weight: number }>> = {};
      for (let i = 0; i < n - 1; i++) {
        routes.push({ domain: `s${i}.bench.test`, prefix: "/", name: `s${i}-web`, port: 8080 });
        set[`s${i}-web`] = fillerEndpoints(i, 10);
      }
      routes.push({ domain: "last.bench.test", prefix: "/", name: "live-web", port: live.port });
      set["live-web"] = { [live.ip]: { weight: 1 } };
      const reg = await createRegistry("file");
      await reg.replace(set);
      let lb: Lb | null = null;
      try {
        const t0 = performance.now();
        lb = await startLb({ routes, registry: reg, mode: "dynamic", routesMode, workers: 2 });
        const port = lb.port;
        const served = await until(async () => (await probe(port, "last.bench.test")).status === 200, 120_000);
        const coldMs = performance.now() - t0;
        const from = lb.controller.lines.length;
        const latencies: number[] = [];
        const changes = routesMode === "reload" && n >= 10_000 ? Math.min(3, CHANGES) : CHANGES;
        for (let k = 0; k < changes && served; k++) {
          const host = `new${k}.bench.test`;
          const extra: RouteSpec = { domain: host, prefix: "/", name: "live-web", port: live.port };
          const c0 = performance.now();
          await writeServices(lb.servicesFile, servicesJson([...routes, extra], port));
          if (await until(async () => (await probe(port, host)).status === 200, 60_000))
            latencies.push(performance.now() - c0);
          await sleep(50);
        }
        await sleep(300);
        const applied = lb.controller.lines.slice(from);
        const reloads = applied.filter((l) => l.msg === "config applied" && l["action"] === "reload").length;
        // The controller's own account of each apply (read, compile, push or reload), without the file watch's 50 ms.
        const applies = applied.filter((l) => l.msg === "config applied" || l.msg === "endpoints pushed");
        const ms = (key: string) => applies.map((l) => Number((l["ms"] as Record<string, number> | undefined)?.[key]));
        const applyMs = ms("total");
        const master = await lb.nginxPid();
        const procs = [master, ...(await childPids(master))];
        const mem = await Promise.all(procs.map(memoryOf));
        const row = {
          sites: n,
          routesMode,
          coldStartMs: Math.round(coldMs),
          served,
          changes: latencies.length,
          changeP50Ms: Math.round(percentile(latencies, 50)),
          changeP99Ms: Math.round(percentile(latencies, 99)),
          reloads,
          applyP50Ms: Math.round(percentile(applyMs, 50)),
          applyP99Ms: Math.round(percentile(applyMs, 99)),
          // The apply split: compile (the daemon's "render") and the push (its "reload" field in push applies).
          compileP50Ms: Math.round(percentile(ms("render"), 50)),
          pushP50Ms: Math.round(percentile(ms("reload"), 50)),
          nginxRssMiB: Math.round(mem.reduce((s, m) => s + m.rss, 0)),
          nginxPssMiB: Math.round(mem.reduce((s, m) => s + m.pss, 0)),
          controllerRssMiB: Math.round((await memoryOf(lb.controller.child.pid ?? 0)).rss),
        };
        console.log(JSON.stringify(row));
      } finally {
        await lb?.stop();
        await reg.close();
      }
    }
}

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => killAll());
