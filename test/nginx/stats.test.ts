import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpCounterRead, parseCounters } from "../../src/admin/traffic-counters.js";
import type { BackendSet } from "../../src/model/backends.js";
import { bindRoutes } from "../../src/render/index.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { hostGet as get, rawGet } from "../helpers/http.js";
import { services } from "../helpers/model.js";
import { serveNginx, type ServedNginx } from "../helpers/nginx.js";
import { waitFor } from "../helpers/wait.js";

/**
 * The traffic counters' log phase (nginx_lb_stats) through real nginx, read from the control server as the controller
 * reads them: per route and per endpoint, for the endpoints the balancer tried (a refused connection retried on
 * another endpoint, a 5xx answer, an IPv6 endpoint), a route that answers 503 itself, a request no route matched, in
 * both routes modes (routes rendered as locations, and routed by the Lua router). Each figure must equal what the
 * client saw, and the control server's own requests (these reads) count as nothing.
 */

const HOST = "stats.test";
const OK = "127.0.0.2";
const FAILING = "127.0.0.3";
const REFUSING = "127.0.0.4";
const V6 = "::1";

let pool: BackendPool;

beforeAll(async () => {
  pool = await startBackends([OK, FAILING, REFUSING, V6]);
  pool.get(FAILING).setCheck("500-all");
  await pool.get(REFUSING).stop();
}, 30_000);
afterAll(async () => {
  await pool?.close();
});

/** Route and endpoint totals summed over every read so far (each read drains what it returns). */
interface Totals {
  readonly routes: Map<
    string,
    {
      requests: number[];
      bytes: number;
      upstream: number;
      request: number;
      upstreamBuckets: number[];
      requestBuckets: number[];
      upstreamMs: number;
      requestMs: number;
    }
  >;
  readonly endpoints: Map<string, { requests: number; errors: number }>;
}

const newTotals = (): Totals => ({ routes: new Map(), endpoints: new Map() });
const add = (xs: number[], i: number, n: number) => (xs[i] = (xs[i] ?? 0) + n);

async function readInto(ng: ServedNginx, totals: Totals): Promise<void> {
  const r = await httpCounterRead(ng.controlPort, ng.pushToken)();
  if (!r.ok) throw new Error(r.error);
  expect(r.status).toBe(200);
  const parsed = parseCounters(r.body);
  if (!parsed.ok) throw new Error(parsed.error);
  const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
  for (const [name, c] of parsed.counts.routes) {
    const t = totals.routes.get(name) ?? {
      requests: [0, 0, 0, 0, 0, 0],
      bytes: 0,
      upstream: 0,
      request: 0,
      upstreamBuckets: c.upstream.map(() => 0),
      requestBuckets: c.request.map(() => 0),
      upstreamMs: 0,
      requestMs: 0,
    };
    totals.routes.set(name, t);
    (["1xx", "2xx", "3xx", "4xx", "5xx"] as const).forEach((k, i) => add(t.requests, i + 1, c.byClass[k]));
    add(t.requests, 0, c.other);
    t.bytes += c.bytes;
    t.upstream += sum(c.upstream);
    t.request += sum(c.request);
    c.upstream.forEach((n, i) => add(t.upstreamBuckets, i, n));
    c.request.forEach((n, i) => add(t.requestBuckets, i, n));
    t.upstreamMs += Math.round(c.upstreamSeconds * 1000);
    t.requestMs += Math.round(c.requestSeconds * 1000);
  }
  for (const [name, byAddr] of parsed.counts.endpoints)
    for (const [addr, e] of byAddr) {
      const key = `${name} ${addr}`;
      const t = totals.endpoints.get(key) ?? { requests: 0, errors: 0 };
      totals.endpoints.set(key, t);
      t.requests += e.requests;
      t.errors += e.errors;
    }
}

/** Reads until `done` holds (a worker adds its counts to the dict every half second). */
async function readUntil(ng: ServedNginx, totals: Totals, what: string, done: (t: Totals) => boolean): Promise<void> {
  try {
    await waitFor(
      what,
      async () => {
        await readInto(ng, totals);
        return done(totals);
      },
      15_000,
      100,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${JSON.stringify([...totals.routes, ...totals.endpoints])}`);
  }
}

const classOf = (status: number) => (status >= 100 && status < 600 ? Math.floor(status / 100) : 0);

describe.each(["reload", "dynamic"] as const)(
  "traffic counters in nginx's log phase (routes mode %s)",
  (routesMode) => {
    let ng: ServedNginx;
    const model = (port: number) =>
      services(HOST, port, [
        { prefix: "/", app: "app", service: "web", port: pool.port },
        { prefix: "/empty", app: "none", service: "web", port: pool.port },
      ]);
    const upstreamOf = (prefix: string) => {
      const r = bindRoutes(model(ng.port), {}).find((b) => b.route.prefix === prefix);
      if (!r) throw new Error(`no route ${prefix}`);
      return r.upstream;
    };
    const set = (ips: readonly string[]): BackendSet => ({
      "app-web": Object.fromEntries(ips.map((ip) => [ip, { weight: 1 }])),
    });

    beforeAll(async () => {
      ng = await serveNginx({
        mode: "dynamic",
        routesMode,
        services: model,
        backends: set([OK]),
        trafficCounters: true,
        // Ejection would take the failing endpoint out mid-test; what is counted is the subject here.
        outlier: { errors: 0, baseMs: 30_000, maxMs: 300_000, maxPercent: 50 },
      });
    }, 60_000);
    afterAll(async () => {
      await ng?.stop();
    });

    it("counts each endpoint the balancer tried, its errors, and the route's answers, bytes and times", async () => {
      await readInto(ng, newTotals()); // drains whatever the start-up confirmation left
      const totals = newTotals();
      const route = upstreamOf("/");
      await ng.push(set([OK, FAILING, REFUSING, V6]));
      const byClass = [0, 0, 0, 0, 0, 0];
      const bodies = new Set<string>();
      for (let i = 0; i < 60; i++) {
        const r = await get(ng.port, HOST, "/x");
        add(byClass, classOf(r.status), 1);
        if (r.status === 200) bodies.add(JSON.parse(r.body).backend as string);
      }
      // The refused endpoint is retried past: every 200 came from the two live ones, every 500 from the failing one.
      const [, , ok = 0, , , failed = 0] = byClass;
      expect([...bodies].sort()).toEqual([OK, V6].sort());
      expect(failed).toBeGreaterThan(0);
      expect(ok + failed).toBe(60);
      const ep = (ip: string) =>
        totals.endpoints.get(`${route} ${ip.includes(":") ? `[${ip}]` : ip}:${pool.port}`) ?? {
          requests: 0,
          errors: 0,
        };
      await readUntil(ng, totals, "every request counted", (t) => (t.routes.get(route)?.request ?? 0) >= 60);
      // Nothing arrives later: a read after the workers' next flush adds nothing.
      await new Promise((r) => setTimeout(r, 1200));
      await readInto(ng, totals);
      const r = totals.routes.get(route);
      expect(r?.requests).toEqual(byClass);
      expect(r?.request).toBe(60);
      expect(r?.upstream).toBe(60);
      expect(r?.bytes).toBeGreaterThan(60 * 100);
      expect(ep(OK)).toEqual({ requests: expect.any(Number), errors: 0 });
      expect(ep(V6)).toEqual({ requests: expect.any(Number), errors: 0 });
      expect(ep(OK).requests + ep(V6).requests).toBe(ok);
      expect(ep(FAILING)).toEqual({ requests: failed, errors: failed });
      // Every attempt on the refusing endpoint failed, and each such request was answered by another one.
      expect(ep(REFUSING).requests).toBeGreaterThan(0);
      expect(ep(REFUSING).errors).toBe(ep(REFUSING).requests);
      // Only this route's: the reads themselves (the control server) are not traffic.
      expect([...totals.routes.keys()]).toEqual([route]);
      expect([...totals.endpoints.keys()].every((k) => k.startsWith(`${route} `))).toBe(true);
    });

    it("times the upstream and the request: an answer after 120 ms falls in the 100-250 ms buckets", async () => {
      await ng.push(set([OK]));
      await readInto(ng, newTotals());
      const totals = newTotals();
      const route = upstreamOf("/");
      for (let i = 0; i < 3; i++) {
        const r = await get(ng.port, HOST, "/nginx-lb-test/delay/120");
        expect(r.status).toBe(200);
      }
      await readUntil(ng, totals, "the three counted", (t) => (t.routes.get(route)?.request ?? 0) >= 3);
      const r = totals.routes.get(route);
      // Buckets up to 5, 10, 25, 50, 100, 250, ... ms: index 5 holds 100 < t <= 250. The sums are whole milliseconds.
      expect(r?.upstreamBuckets).toEqual([0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]);
      expect(r?.requestBuckets).toEqual([0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]);
      expect(r?.upstreamMs).toBeGreaterThanOrEqual(3 * 119);
      expect(r?.upstreamMs).toBeLessThan(3 * 250);
      expect(r?.requestMs).toBeGreaterThanOrEqual(r?.upstreamMs ?? Infinity);
    });

    it("counts the bytes each client received, to the byte, from one byte to a body of megabytes", async () => {
      await ng.push(set([OK]));
      await readInto(ng, newTotals());
      const totals = newTotals();
      const route = upstreamOf("/");
      let received = 0;
      const sizes = [1, 777, 65_537, 3_000_001];
      for (const n of sizes) received += (await rawGet(ng.port, `/nginx-lb-test/bytes/${n}`, HOST, 10_000)).length;
      expect(received).toBeGreaterThan(sizes.reduce((a, b) => a + b));
      await readUntil(ng, totals, "the four counted", (t) => (t.routes.get(route)?.request ?? 0) >= sizes.length);
      await new Promise((r) => setTimeout(r, 1200));
      await readInto(ng, totals);
      expect(totals.routes.get(route)).toMatchObject({ request: sizes.length, bytes: received });
      // Counted by the direct reader: a worker that fell back to ngx.var says so in the error log.
      expect(await ng.errorLog()).not.toContain("through ngx.var");
    });

    it("counts a route's own 503 under its name and a request no route matched as `-`, with no endpoint", async () => {
      await readInto(ng, newTotals());
      const totals = newTotals();
      const empty = upstreamOf("/empty");
      for (let i = 0; i < 5; i++) expect((await get(ng.port, HOST, "/empty/x")).status).toBe(503);
      const unmatched = await get(ng.port, "nowhere.test", "/");
      expect(unmatched.status).toBe(404);
      await readUntil(
        ng,
        totals,
        "the 503s and the 404 counted",
        (t) => (t.routes.get(empty)?.request ?? 0) >= 5 && (t.routes.get("")?.request ?? 0) >= 1,
      );
      await new Promise((r) => setTimeout(r, 1200));
      await readInto(ng, totals);
      expect(totals.routes.get(empty)).toMatchObject({ requests: [0, 0, 0, 0, 0, 5], request: 5, upstream: 0 });
      expect(totals.routes.get("")).toMatchObject({ requests: [0, 0, 0, 0, 1, 0], request: 1, upstream: 0 });
      // Only these: the reads themselves (the control server) are not traffic.
      expect([...totals.routes.keys()].sort()).toEqual(["", empty].sort());
      expect(totals.endpoints.size).toBe(0);
    });
  },
);
