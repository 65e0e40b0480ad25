import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendSet } from "../../src/model/backends.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, serveNginx, type ServedNginx } from "../helpers/nginx.js";

/**
 * nginx's memory over many routing changes with routes pushed: each change adds a site of many routes (served, so the
 * worker decodes and caches its routes, endpoint sets and traffic counter keys) and removes the previous change's
 * site. After a warm-up (the worker's Lua heap reaching its collector's steady state, first use of every code path),
 * the worker's memory must stay put: a removed site's cached entries, kept for the worker's life, grow it by megabytes
 * here. (The collector's pace after a start-up file is startup-file.test.ts's.)
 */

// Each site's routes: enough that one change's cached entries are tens of KB in the worker.
const ROUTES_PER_SITE = 150;
const WARMUP_CHANGES = 40;
const CHANGES = 400;
// Kept for the worker's life, the removed sites' entries grow it by ~50 MB here (the router's alone: 46 MB). Without a
// leak the figure still moves by 5-23 MB between two readings (the most on a machine running the rest of the suite
// beside it): the changes come faster than on any real system, and the reading catches the garbage the collector has
// not reached yet. The bound sits between that noise and a leak.
const MAX_GROWTH_MIB = 32;

let pool: BackendPool;
let ngx: ServedNginx;

const backends: BackendSet = mustDesired({ servers: [] }, { "a-web": { "127.0.0.2": { weight: 1 } } }).backends;

const prefix = (i: number) => `/route-${i}/a-path-segment-long-enough-to-count`;

/** The site every change keeps, and change k's own site of ROUTES_PER_SITE routes. */
function services(k: number | null, port: number) {
  const to = { app: "a", service: "web", port: pool.port };
  const site = (domain: string, n: number) => ({
    domain_name: domain,
    frontend_port: port,
    routes: Object.fromEntries(Array.from({ length: n }, (_, i) => [prefix(i), to])),
  });
  return mustDesired({
    servers: [site("keep.test", 1), ...(k === null ? [] : [site(`site${k}.test`, ROUTES_PER_SITE)])],
  }).services;
}

/**
 * The worker's resident and proportional set size, and of them its private anonymous memory (Lua's heap, nginx's
 * pools: where a leak of the worker lives; the shared dicts and the mapped files are not in it), MiB.
 */
async function memory(pid: number): Promise<{ rss: number; pss: number; anon: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rss: kb("Rss") / 1024, pss: kb("Pss") / 1024, anon: kb("Anonymous") / 1024 };
}

async function change(k: number): Promise<void> {
  const out = await ngx.apply({ services: services(k, ngx.port) });
  expect(out.action).toBe("push");
  // A few routes of the new site, each its own upstream: the router, the balancer and the counters cache them.
  for (const i of [0, Math.floor(ROUTES_PER_SITE / 2), ROUTES_PER_SITE - 1]) {
    const r = await get(`http://127.0.0.1:${ngx.port}${prefix(i)}/x`, { host: `site${k}.test` });
    expect(r.status).toBe(200);
    expect(r.json<Echo>().backend).toBe("127.0.0.2");
  }
}

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
  ngx = await serveNginx({
    services: (port) => services(null, port),
    backends,
    mode: "dynamic",
    routesMode: "dynamic",
    trafficCounters: true,
    // One worker: every request and push lands in the process measured.
    workers: 1,
  });
});

afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

describe("nginx's memory over routing changes (routes pushed)", () => {
  it(`stays within ${MAX_GROWTH_MIB} MiB over ${CHANGES} changes of ${ROUTES_PER_SITE}-route sites`, async () => {
    const [worker] = await ngx.workerPids();
    expect(worker).toBeGreaterThan(0);
    const pid = worker ?? 0;
    for (let k = 0; k < WARMUP_CHANGES; k++) await change(k);
    const before = await memory(pid);
    for (let k = WARMUP_CHANGES; k < WARMUP_CHANGES + CHANGES; k++) await change(k);
    // The sweep timer runs once a second: let it see the last push.
    await new Promise((r) => setTimeout(r, 1500));
    const after = await memory(pid);
    // The same worker throughout: a push never replaces it.
    expect(await ngx.workerPids()).toEqual([pid]);
    const mib = (key: "rss" | "pss" | "anon") => `${before[key].toFixed(1)} -> ${after[key].toFixed(1)}`;
    const figures = `worker RSS ${mib("rss")} MiB, PSS ${mib("pss")} MiB, private anonymous ${mib("anon")} MiB`;
    console.log(figures);
    expect(after.anon - before.anon, figures).toBeLessThanOrEqual(MAX_GROWTH_MIB);
    expect(after.pss - before.pss, figures).toBeLessThanOrEqual(MAX_GROWTH_MIB);
  }, 300_000);
});
