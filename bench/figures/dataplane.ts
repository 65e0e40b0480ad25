/**
 * Figure 4, data plane: requests/s and p99 with wrk, (a) straight to one static backend, (b) through nginx-lb's
 * rendered config to that backend (each endpoint mode), (c) through the original design's config for the same
 * route. Rounds interleave a, b, c so drift on a shared machine hits all alike; ratios are taken within a round.
 */
import type { Context } from "../lib/context.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { freePort } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { median } from "../lib/stats.js";
import type { StandaloneNginx } from "../../test/helpers/nginx.js";
import { startStaticNginx } from "../lib/static-nginx.js";
import { runWrk, type WrkResult } from "../lib/wrk.js";
import { renderOriginalStyle } from "../original-style.js";

const HOST = "dp.bench.test";
const NAME = "dp-web";

export interface DataPlaneResult {
  readonly wrk: { threads: number; connections: number; seconds: number; rounds: number };
  /** Per target: median requests/s and p99 over the rounds, and every round's raw result. */
  readonly targets: {
    label: string;
    rps: number;
    p99ms: number;
    failed: number;
    /** Connections the backend accepted per 1,000 requests: ~0 with upstream keepalive, ~1,000 without. */
    backendConnsPer1k: number;
    runs: (WrkResult & { backendConns: number })[];
  }[];
  /** Per mode: b/a and b/c, median and range over the rounds. */
  readonly ratios: { mode: Mode; ba: number[]; bc: number[] }[];
}

export async function dataPlane(ctx: Context): Promise<DataPlaneResult> {
  const rounds = ctx.quick ? 1 : 3;
  const seconds = ctx.quick ? 1 : 4;
  const wrk = { threads: 1, connections: 50, seconds, rounds };
  const backend = ctx.backends.ips[0] ?? "";
  const route: RouteSpec = { domain: HOST, prefix: "/", name: NAME, port: ctx.backends.port };
  const lbs: { mode: Mode; lb: Lb; reg: Registry }[] = [];
  let original: StandaloneNginx | null = null;
  try {
    for (const mode of ctx.modes) {
      const reg = await createRegistry(ctx.registry);
      await reg.put(NAME, backend);
      lbs.push({ mode, reg, lb: await startLb({ routes: [route], registry: reg, mode, workers: 1 }) });
    }
    const origPort = await freePort();
    original = await startStaticNginx((dir) =>
      renderOriginalStyle(
        [route],
        { [NAME]: { [backend]: { weight: 1 } } },
        { host: "127.0.0.1", port: origPort },
        dir,
        1,
      ),
    );
    const targets: { label: string; url: string; host?: string }[] = [
      { label: "a: straight to the backend", url: `http://${backend}:${ctx.backends.port}/` },
      ...lbs.map(({ mode, lb }) => ({
        label: `b: through nginx-lb (${mode})`,
        url: `http://127.0.0.1:${lb.port}/`,
        host: HOST,
      })),
      { label: "c: original design's config", url: `http://127.0.0.1:${origPort}/`, host: HOST },
    ];
    const runs = new Map<string, (WrkResult & { backendConns: number })[]>(targets.map((t) => [t.label, []]));
    for (let r = 0; r < rounds; r++)
      for (const t of targets) {
        ctx.log(`data plane: round ${r + 1}/${rounds}, ${t.label}`);
        const before = await ctx.backends.accepted();
        const res = await runWrk({ ...wrk, url: t.url, ...(t.host ? { host: t.host } : {}) });
        runs.get(t.label)?.push({ ...res, backendConns: (await ctx.backends.accepted()) - before - 1 });
      }
    const of = (label: string) => runs.get(label) ?? [];
    const a = of(targets[0]?.label ?? "");
    const c = of(targets[targets.length - 1]?.label ?? "");
    return {
      wrk,
      targets: targets.map((t) => ({
        label: t.label,
        rps: Math.round(median(of(t.label).map((x) => x.rps))),
        p99ms: median(of(t.label).map((x) => x.p99ms)),
        failed: of(t.label).reduce((s, x) => s + x.failed, 0),
        backendConnsPer1k: median(of(t.label).map((x) => (1000 * x.backendConns) / x.requests)),
        runs: of(t.label),
      })),
      ratios: lbs.map(({ mode }) => {
        const b = of(`b: through nginx-lb (${mode})`);
        return {
          mode,
          ba: b.map((x, i) => x.rps / (a[i]?.rps ?? NaN)),
          bc: b.map((x, i) => x.rps / (c[i]?.rps ?? NaN)),
        };
      }),
    };
  } finally {
    await original?.stop();
    for (const { lb, reg } of lbs) {
      await lb.stop();
      await reg.close();
    }
  }
}
