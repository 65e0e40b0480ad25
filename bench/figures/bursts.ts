/**
 * Figure 2, bursts: N back-to-back registry changes (each one key, on its own route), then: how many reloads they
 * cost, how long until nginx serves the final state, and whether any change was lost for good. Bursts alternate
 * between putting one endpoint on every route (each route goes 503 -> 200 from a known backend) and deleting them
 * again (200 -> 503), so every route's answer tells whether its change arrived.
 */
import type { Context } from "../lib/context.js";
import { pool, probe } from "../lib/http.js";
import { startLb, type Lb, type Mode, type RouteSpec } from "../lib/lb.js";
import { sleep } from "../lib/procs.js";
import { createRegistry, type Registry } from "../lib/registry.js";
import { summarize, type Summary } from "../lib/stats.js";

const HOST = "burst.bench.test";
/** A change not visible this long after the final state was reached is lost for good. */
const SETTLE_MS = 5_000;
const FINAL_TIMEOUT_MS = 30_000;

export interface BurstRow {
  readonly mode: Mode;
  readonly changes: number;
  readonly bursts: number;
  readonly reloads: Summary;
  readonly finalMs: Summary;
  /** Changes missing from nginx's answers after the settle time, summed over all bursts. */
  readonly lost: number;
  readonly burstsWithLoss: number;
  /** How long writing the burst itself took (the registry's share). */
  readonly writeMs: Summary;
  readonly raw: { reloads: number[]; finalMs: number[]; lost: number[] };
}

const name = (i: number) => `burst${i}-web`;

/** What route i must answer after burst k: a put burst's backend, or 503 after a delete burst. */
function expected(ctx: Context, i: number, k: number): string | null {
  const ips = ctx.backends.ips;
  return k % 2 === 0 ? (ips[(i + k) % ips.length] ?? "") : null;
}

async function serves(lb: Lb, i: number, want: string | null): Promise<boolean> {
  const r = await probe(lb.port, HOST, `/b${i}`);
  return want === null ? r.status === 503 : r.status === 200 && r.backend === want;
}

async function wrong(ctx: Context, lb: Lb, n: number, k: number): Promise<number[]> {
  const idx = Array.from({ length: n }, (_, i) => i);
  const ok = await pool(idx, 8, (i) => serves(lb, i, expected(ctx, i, k)));
  return idx.filter((i) => !ok[i]);
}

async function oneBurst(ctx: Context, lb: Lb, reg: Registry, n: number, k: number) {
  const from = lb.controller.lines.length;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const want = expected(ctx, i, k);
    if (want === null) await reg.del(name(i), expected(ctx, i, k - 1) ?? "");
    else await reg.put(name(i), want);
  }
  const written = performance.now() - t0;
  // Snapshots are whole and ordered, so the last change being served means the burst's final snapshot is live;
  // the sweep below confirms every other route.
  let finalMs = NaN;
  for (let i = 0; i < 300_000 && performance.now() - t0 < FINAL_TIMEOUT_MS; i++)
    if (await serves(lb, n - 1, expected(ctx, n - 1, k))) {
      finalMs = performance.now() - t0;
      break;
    }
  let missing = await wrong(ctx, lb, n, k);
  const settleEnd = performance.now() + SETTLE_MS;
  while (missing.length > 0 && performance.now() < settleEnd) {
    await sleep(250);
    missing = await wrong(ctx, lb, n, k);
    if (missing.length === 0) finalMs = performance.now() - t0;
  }
  // Trailing applies of this burst belong to it; the next burst starts from a quiet controller.
  await sleep(600);
  const reloads = lb.appliesSince(from).filter((l) => l["action"] === "reload").length;
  return { written, finalMs, lost: missing.length, reloads };
}

export async function bursts(ctx: Context): Promise<BurstRow[]> {
  const plan = ctx.quick
    ? [
        { changes: 20, bursts: 2 },
        { changes: 200, bursts: 2 },
      ]
    : [
        { changes: 200, bursts: 20 },
        { changes: 1000, bursts: 4 },
      ];
  const maxRoutes = Math.max(...plan.map((p) => p.changes));
  const routes: RouteSpec[] = Array.from({ length: maxRoutes }, (_, i) => ({
    domain: HOST,
    prefix: `/b${i}`,
    name: name(i),
    port: ctx.backends.port,
  }));
  const rows: BurstRow[] = [];
  for (const mode of ctx.modes) {
    const reg = await createRegistry(ctx.registry);
    let lb: Lb | null = null;
    try {
      lb = await startLb({ routes, registry: reg, mode, workers: ctx.workers });
      for (const p of plan) {
        ctx.log(`bursts: ${mode} mode, ${p.bursts} bursts of ${p.changes} changes`);
        const res = [];
        // An even count of bursts leaves every route empty again for the next size.
        for (let k = 0; k < p.bursts + (p.bursts % 2); k++) res.push(await oneBurst(ctx, lb, reg, p.changes, k));
        rows.push({
          mode,
          changes: p.changes,
          bursts: res.length,
          reloads: summarize(res.map((r) => r.reloads)),
          finalMs: summarize(res.filter((r) => !Number.isNaN(r.finalMs)).map((r) => Math.round(r.finalMs))),
          lost: res.reduce((s, r) => s + r.lost, 0),
          burstsWithLoss: res.filter((r) => r.lost > 0).length,
          writeMs: summarize(res.map((r) => Math.round(r.written))),
          raw: {
            reloads: res.map((r) => r.reloads),
            finalMs: res.map((r) => Math.round(r.finalMs)),
            lost: res.map((r) => r.lost),
          },
        });
      }
    } finally {
      await lb?.stop();
      await reg.close();
    }
  }
  return rows;
}
