/**
 * Figure 3, scale: N routes x 10 endpoints each (10 routes per domain). The renderer timed in-process (pure, so
 * this is its cost alone), then the real daemon started on that registry: its own account of render, `nginx -t`
 * and reload for a routing change, the controller's memory and nginx's (master + workers).
 */
import { writeServices } from "../../test/helpers/controller.js";
import { mustDesired } from "../../test/helpers/model.js";
import { renderNginxConf } from "../../src/render/index.js";
import type { BackendSet } from "../../src/model/backends.js";
import { type Context, fillerEndpoints, round1 } from "../lib/context.js";
import { servicesJson, startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { probe } from "../lib/http.js";
import { childPids, memoryOf, sleep } from "../lib/procs.js";
import { createRegistry } from "../lib/registry.js";
import { median } from "../lib/stats.js";

export interface ScaleRow {
  readonly mode: Mode;
  readonly routes: number;
  readonly endpoints: number;
  readonly confBytes: number;
  /** In-process renderNginxConf, median of several runs. */
  readonly renderMs: number;
  /** Controller start -> nginx serving the whole registry (the live route, whose key is written last, answers). */
  readonly startMs: number;
  /** The daemon's account of a routing change (median over the reloads done). */
  readonly reload: { render: number; test: number; reload: number; total: number; n: number };
  readonly controllerRssMiB: number;
  readonly nginxRssMiB: number;
  readonly nginxPssMiB: number;
  readonly nginxProcesses: number;
  /** Set when the daemon never served this registry: the row has no daemon figures. */
  readonly error?: string;
}

export const PROBE_HOST = "probe.scale.bench.test";
const PROBE_NAME = "scaleprobe-web";

/**
 * N filler routes x 10 endpoints, and one live route whose endpoint is the registry's last key: once it answers,
 * the controller has applied the whole registry (sources emit whole snapshots), so the figures below are for all
 * N x 10 endpoints and not for a registry the controller failed to read.
 */
export function scaleInput(n: number, live: { ip: string; port: number }): { routes: RouteSpec[]; set: BackendSet } {
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < n; i++) {
    const name = `scale${i}-web`;
    routes.push({
      domain: `s${Math.floor(i / 10)}.scale.bench.test`,
      prefix: i % 10 ? `/r${i % 10}` : "/",
      name,
      port: 8080,
    });
    set[name] = fillerEndpoints(i, 10);
  }
  routes.push({ domain: PROBE_HOST, prefix: "/", name: PROBE_NAME, port: live.port });
  set[PROBE_NAME] = { [live.ip]: { weight: 1 } };
  return { routes, set };
}

const SERVE_TIMEOUT_MS = 60_000;
const FAILING_GRACE_MS = 10_000;

function failedRow(mode: Mode, n: number, bytes: number, renderMs: number): ScaleRow {
  return {
    mode,
    routes: n,
    endpoints: n * 10,
    confBytes: bytes,
    renderMs: round1(renderMs),
    startMs: NaN,
    reload: { render: NaN, test: NaN, reload: NaN, total: NaN, n: 0 },
    controllerRssMiB: NaN,
    nginxRssMiB: NaN,
    nginxPssMiB: NaN,
    nginxProcesses: 0,
  };
}

export async function scale(ctx: Context): Promise<ScaleRow[]> {
  const sizes = ctx.quick ? [100, 300] : [1000, 10_000];
  const rows: ScaleRow[] = [];
  for (const n of sizes) {
    const { routes, set } = scaleInput(n, { ip: ctx.backends.ips[0] ?? "", port: ctx.backends.port });
    // A reload at 10,000 routes takes seconds; two keep the whole suite inside its 10 minutes.
    const reloads = ctx.quick ? 1 : n >= 10_000 ? 2 : 3;
    const desired = mustDesired({ version: "0.1", servers: servicesJson(routes, 8080) }, set);
    const times: number[] = [];
    let bytes = 0;
    for (let i = 0; i < (ctx.quick ? 2 : 5); i++) {
      const t0 = performance.now();
      const r = renderNginxConf(desired, { dir: "/var/lib/nginx-lb", listenHost: "127.0.0.1", controlPort: 9999 });
      times.push(performance.now() - t0);
      bytes = r.conf.length;
    }
    for (const mode of ctx.modes) {
      ctx.log(`scale: ${mode} mode, ${n} routes x 10 endpoints`);
      const reg = await createRegistry(ctx.registry);
      let lb: Lb | null = null;
      try {
        await reg.replace(set);
        const t0 = performance.now();
        lb = await startLb({ routes, registry: reg, mode, workers: ctx.workers });
        let served = false;
        let failingSince = Infinity;
        for (let i = 0; i < 2000 && !served && performance.now() - t0 < SERVE_TIMEOUT_MS; i++) {
          served = (await probe(lb.port, PROBE_HOST)).status === 200;
          if (served) break;
          // A controller that logs errors and still serves nothing after a while is not going to: stop waiting.
          if (failingSince === Infinity && lb.controller.lines.some((l) => l.level >= 50))
            failingSince = performance.now();
          if (performance.now() - failingSince > FAILING_GRACE_MS) break;
          await sleep(50);
        }
        const startMs = performance.now() - t0;
        if (!served) {
          const err = lb.controller.lines.find((l) => l.level >= 50)?.msg ?? "no error logged";
          rows.push({
            ...failedRow(mode, n, bytes, median(times)),
            error: `nginx-lb did not serve the registry's endpoints (waited ${Math.round(startMs / 1000)} s): ${err}`,
          });
          continue;
        }
        const from = lb.controller.lines.length;
        for (let k = 1; k <= reloads; k++) {
          // A routing change reloads in every mode: one extra route, toggled, written as the config centre does.
          const extra: RouteSpec = { domain: "extra.scale.bench.test", prefix: "/", name: "scale0-web", port: 8080 };
          const before = lb.appliesSince(from).length;
          await writeServices(lb.servicesFile, servicesJson(k % 2 ? [...routes, extra] : routes, lb.port));
          const deadline = Date.now() + 120_000;
          while (lb.appliesSince(from).length === before && Date.now() < deadline) await sleep(20);
          await sleep(300);
        }
        const applies = lb.appliesSince(from);
        const ms = (key: string) => median(applies.map((l) => Number((l["ms"] as Record<string, number>)[key])));
        const master = await lb.nginxPid();
        // Old workers of the last reload may still be draining: measure the steady state, master + current workers.
        let workers = await childPids(master);
        for (let i = 0; i < 300 && workers.length > ctx.workers; i++) {
          await sleep(100);
          workers = await childPids(master);
        }
        const procs = [master, ...workers];
        const mem = (await Promise.all(procs.map(memoryOf))).filter((x) => Number.isFinite(x.rss));
        rows.push({
          mode,
          routes: n,
          endpoints: n * 10,
          confBytes: bytes,
          renderMs: round1(median(times)),
          startMs: Math.round(startMs),
          reload: {
            render: ms("render"),
            test: ms("test"),
            reload: ms("reload"),
            total: ms("total"),
            n: applies.length,
          },
          controllerRssMiB: round1((await memoryOf(lb.controller.child.pid ?? 0)).rss),
          nginxRssMiB: round1(mem.reduce((s, m) => s + m.rss, 0)),
          nginxPssMiB: round1(mem.reduce((s, m) => s + m.pss, 0)),
          nginxProcesses: mem.length,
        });
      } finally {
        await lb?.stop();
        await reg.close();
      }
    }
  }
  return rows;
}
