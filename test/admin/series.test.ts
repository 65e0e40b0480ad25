import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { histogramQuantile, SeriesStore, type RouteCounts } from "../../src/admin/series.js";
import { LATENCY_BOUNDS, TrafficStats } from "../../src/admin/traffic.js";
import type { Topology } from "../../src/reconciler/topology.js";

const B = LATENCY_BOUNDS; // 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf
/** Per-bucket counts from `{ bucketIndex: count }`. */
const h = (at: Record<number, number>): number[] => B.concat([Infinity]).map((_, i) => at[i] ?? 0);
const counts = (requests: number, errors: number, latency: Record<number, number> = {}): RouteCounts => ({
  requests,
  errors,
  latency: h(latency),
});
const R = "nlb_000000000000000a";
const S = "nlb_000000000000000b";

describe("histogram quantile (Prometheus histogram_quantile: linear inside the bucket)", () => {
  it.each([
    // [q, counts, expected]: hand-computed.
    [0.5, h({ 2: 10 }), 0.0175], // rank 5 of 10 in (0.01, 0.025]: 0.01 + 0.015 * 5/10
    [0.99, h({ 2: 10 }), 0.02485], // rank 9.9: 0.01 + 0.015 * 9.9/10
    [0.5, h({ 0: 4 }), 0.0025], // lowest bucket starts at 0: 0 + 0.005 * 2/4
    [0.5, h({ 0: 4, 4: 4, 11: 2 }), 0.0625], // rank 5, 4 below: 0.05 + 0.05 * 1/4
    [0.99, h({ 0: 4, 4: 4, 11: 2 }), 10], // rank 9.9 in +Inf: the highest finite bound
    [0.5, h({ 1: 1, 7: 1 }), 0.01], // rank 1 reached exactly at the top of (0.005, 0.01]
    [0.99, h({ 1: 1, 7: 1 }), 0.5 + 0.5 * 0.98], // rank 1.98, 1 below, in (0.5, 1]
  ])("q=%s of %j is %s", (q, c, want) => expect(histogramQuantile(q, B, c)).toBeCloseTo(want, 10));

  it("is NaN without observations", () => expect(histogramQuantile(0.5, B, h({}))).toBeNaN());

  it.each([
    [0.004, 0],
    [0.005, 0],
    [0.0051, 1],
    [10, 10],
    [11, 11],
  ])("an upstream time of %s s counts in bucket %s (le is inclusive)", (s, i) => {
    const stats = oneRouteStats();
    stats.record({ route: R, status: 200, requestSeconds: s, upstreamSeconds: s, bytes: 1, endpoints: [] });
    expect(stats.routeCounts().get(R)?.latency).toEqual(h({ [i]: 1 }));
  });
});

/** TrafficStats with one route, R. */
function oneRouteStats(): TrafficStats {
  const stats = new TrafficStats(new Registry());
  const topo: Topology = {
    servers: [
      {
        domain: "a.test",
        port: 80,
        routes: [{ prefix: "/", label: "a", upstream: R, backend: "web-api:80", backendPath: "/", endpoints: [] }],
      },
    ],
  };
  stats.setTopology(topo);
  return stats;
}

describe("series store", () => {
  const store = (o: { maxSeries?: number } = {}) =>
    new SeriesStore({ bounds: B, bucketMs: 5_000, windowMs: 60_000, ...o });
  const t0 = 1_000_000_000_000; // a bucket boundary (divisible by 5,000)

  it("makes one point per closed bucket: rates over the bucket, quantiles from its histogram change", () => {
    const s = store();
    s.observe(t0, new Map([[R, counts(100, 0, { 2: 100 })]]));
    s.observe(t0 + 1_000, new Map([[R, counts(999, 9, { 0: 999 })]])); // same bucket: not read
    s.observe(t0 + 5_000, new Map([[R, counts(150, 10, { 2: 100, 4: 50 })]]));
    const v = s.get(R);
    expect(v.requestsPerSecond).toHaveLength(12);
    expect(v.end).toBe(new Date(t0 + 5_000).toISOString());
    expect(v.requestsPerSecond.at(-1)).toBe(10); // 50 requests / 5 s
    expect(v.errorsPerSecond.at(-1)).toBe(2); // 10 / 5 s
    expect(v.p50Ms.at(-1)).toBe(75); // all 50 in (0.05, 0.1]: 0.05 + 0.05 * 25/50
    expect(v.p99Ms.at(-1)).toBe(99.5); // 0.05 + 0.05 * 49.5/50
    expect(v.requestsPerSecond.slice(0, -1)).toEqual(Array(11).fill(null)); // before the store counted
  });

  it("shows zero traffic as zero rates and no quantile, and a route without traffic keeps no series", () => {
    const s = store();
    s.observe(
      t0,
      new Map([
        [R, counts(0, 0)],
        [S, counts(0, 0)],
      ]),
    );
    s.observe(
      t0 + 5_000,
      new Map([
        [R, counts(5, 0, { 0: 5 })],
        [S, counts(0, 0)],
      ]),
    );
    s.observe(
      t0 + 10_000,
      new Map([
        [R, counts(5, 0, { 0: 5 })],
        [S, counts(0, 0)],
      ]),
    );
    expect(s.size).toBe(1);
    expect(s.get(R).requestsPerSecond.slice(-2)).toEqual([1, 0]);
    expect(s.get(R).p50Ms.slice(-2)).toEqual([2.5, null]);
    expect(s.get(S).requestsPerSecond.slice(-2)).toEqual([0, 0]);
    expect(s.get(S).p99Ms.slice(-2)).toEqual([null, null]);
  });

  it("gives every bucket of a gap (a stalled timer) the average over it", () => {
    const s = store();
    s.observe(t0, new Map([[R, counts(0, 0)]]));
    s.observe(t0 + 15_000, new Map([[R, counts(30, 0, { 3: 30 })]]));
    expect(s.get(R).requestsPerSecond.slice(-4)).toEqual([null, 2, 2, 2]);
  });

  it("drops a removed route's series, and one idle for a whole window", () => {
    const s = store();
    s.observe(
      t0,
      new Map([
        [R, counts(0, 0)],
        [S, counts(0, 0)],
      ]),
    );
    s.observe(
      t0 + 5_000,
      new Map([
        [R, counts(1, 0)],
        [S, counts(1, 0)],
      ]),
    );
    expect(s.size).toBe(2);
    s.observe(t0 + 10_000, new Map([[R, counts(1, 0)]]));
    expect(s.size).toBe(1);
    s.observe(t0 + 60_000, new Map([[R, counts(1, 0)]])); // the newest active bucket still in the window
    expect(s.size).toBe(1);
    s.observe(t0 + 65_000, new Map([[R, counts(1, 0)]]));
    expect(s.size).toBe(0);
    expect(s.get(R).requestsPerSecond.at(-1)).toBe(0);
  });

  it("keeps at most maxSeries series; a refused route says so and shows no made-up zeros", () => {
    const s = store({ maxSeries: 1 });
    s.observe(
      t0,
      new Map([
        [R, counts(0, 0)],
        [S, counts(0, 0)],
      ]),
    );
    s.observe(
      t0 + 5_000,
      new Map([
        [R, counts(1, 0)],
        [S, counts(1, 0)],
      ]),
    );
    expect(s.size).toBe(1);
    expect(s.get(S).note).toMatch(/more than 1 routes had traffic/);
    expect(s.get(S).requestsPerSecond.at(-1)).toBeNull();
    // R idles out of the window; S, still busy, gets a series from then on (its earlier buckets stay unknown).
    let at = t0 + 10_000;
    for (let n = 2; at <= t0 + 70_000; at += 5_000, n++)
      s.observe(
        at,
        new Map([
          [R, counts(1, 0)],
          [S, counts(n, 0)],
        ]),
      );
    expect(s.get(S).note).toBeNull();
    expect(s.get(S).requestsPerSecond.slice(-2)).toEqual([null, 0.2]);
  });

  it("ignores a clock that goes back until it passes the open bucket again", () => {
    const s = store();
    s.observe(t0, new Map([[R, counts(0, 0)]]));
    s.observe(t0 - 60_000, new Map([[R, counts(10, 0)]]));
    expect(s.get(R).end).toBeNull();
  });

  it("reads TrafficStats' counters: requests, 5xx and upstream times per bucket", () => {
    const stats = oneRouteStats();
    const s = store();
    s.observe(t0, stats.routeCounts());
    for (let i = 0; i < 10; i++)
      stats.record({
        route: R,
        status: i < 2 ? 502 : 200,
        requestSeconds: 0.02,
        upstreamSeconds: 0.02,
        bytes: 1,
        endpoints: [],
      });
    stats.record({ route: R, status: 503, requestSeconds: 0, upstreamSeconds: null, bytes: 1, endpoints: [] });
    s.observe(t0 + 5_000, stats.routeCounts());
    const v = s.get(R);
    expect([v.requestsPerSecond.at(-1), v.errorsPerSecond.at(-1), v.p50Ms.at(-1)]).toEqual([2.2, 0.6, 17.5]);
  });

  it("nginx's counters (dynamic mode) feed the same series: rates and upstream quantiles", () => {
    const stats = oneRouteStats();
    const s = store();
    s.observe(t0, stats.routeCounts());
    const upstream = new Array<number>(B.length + 1).fill(0);
    upstream[3] = 10; // ten answers in (0.025 s, 0.05 s]
    stats.add({
      routes: new Map([
        [
          R,
          {
            byClass: { "1xx": 0, "2xx": 8, "3xx": 0, "4xx": 0, "5xx": 2 },
            other: 0,
            bytes: 10,
            upstream,
            upstreamSeconds: 0.4,
            request: upstream,
            requestSeconds: 0.4,
          },
        ],
      ]),
      endpoints: new Map(),
    });
    s.observe(t0 + 5_000, stats.routeCounts());
    const v = s.get(R);
    expect([v.requestsPerSecond.at(-1), v.errorsPerSecond.at(-1), v.p50Ms.at(-1)]).toEqual([2, 0.4, 37.5]);
  });
});
