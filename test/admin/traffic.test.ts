import { appendFile, chmod, mkdir, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Histogram, Registry } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import {
  emptyCounts,
  HISTOGRAM_BUCKETS,
  parseRecord,
  startTrafficReceiver,
  trafficLogPath,
  TrafficStats,
  type RouteCounts,
} from "../../src/admin/traffic.js";
import { rates } from "../../src/admin/view.js";
import { createLogger } from "../../src/shared/log.js";
import { cleanupNginx, tempDir } from "../helpers/nginx.js";
import { waitFor } from "../helpers/wait.js";
import type { Topology } from "../../src/reconciler/topology.js";

const topology = (upstreams: string[], endpoints: string[] = []): Topology => ({
  servers: [
    {
      domain: "a.test",
      port: 8080,
      routes: upstreams.map((u, i) => ({
        prefix: `/r${i}`,
        label: `a.test:8080/r${i}`,
        upstream: u,
        backend: "web-api:80",
        backendPath: "/",
        endpoints: endpoints.map((address) => ({ address, weight: 1, role: "primary" as const })),
      })),
    },
  ],
});
/** A record line as the `nlb` log_format writes it (tab-separated; `a` is $upstream_addr, `-` for none). */
const line = (route: string, status: number, u = "0.004", a = "-") => [route, status, "0.005", u, "120", a].join("\t");

/** Every label set of a metric family in the registry's output. */
async function series(registry: Registry, name: string): Promise<string[]> {
  return (await registry.metrics()).split("\n").filter((l) => l.startsWith(`${name}{`));
}

describe("traffic records", () => {
  it("parses nginx's record line, taking the last upstream time after retries", () => {
    expect(parseRecord(line("nlb_0123456789abcdef", 502, "0.001, 0.030"))).toEqual({
      route: "nlb_0123456789abcdef",
      status: 502,
      requestSeconds: 0.005,
      upstreamSeconds: 0.03,
      bytes: 120,
      endpoints: [],
    });
    // The endpoints tried, IPv6 included, across retries (", ") and internal redirects (" : ").
    const tried = parseRecord(line("nlb_0123456789abcdef", 200, "0.004", "127.0.0.2:80, [::1]:80 : 127.0.0.3:80"));
    expect(tried?.endpoints).toEqual(["127.0.0.2:80", "[::1]:80", "127.0.0.3:80"]);
    // A request no route matched, answered by nginx: no route, no upstream time, no endpoint.
    expect(parseRecord(line("", 404, "-"))).toMatchObject({ route: "", upstreamSeconds: null, endpoints: [] });
    expect(parseRecord(line("-", 404, "-"))?.route).toBe("");
    expect(parseRecord("garbage")).toBeNull();
    expect(parseRecord('{"r":"nlb_0123456789abcdef","s":"200","t":"0.005"}')).toBeNull();
    // A field short, a field more, a status or time that is not nginx's number.
    const good = line("nlb_0123456789abcdef", 200).split("\t");
    expect(parseRecord(good.slice(0, 5).join("\t"))).toBeNull();
    expect(parseRecord([...good, "x"].join("\t"))).toBeNull();
    for (const [i, bad] of [
      [1, "2e2"],
      [1, " 200"],
      [1, "-"],
      [2, "0x10"],
      [2, ""],
    ] as const)
      expect(parseRecord(good.map((v, j) => (j === i ? bad : v)).join("\t"))).toBeNull();
  });

  it("keeps the per-route label set bounded by the model whatever routes the records name", async () => {
    const registry = new Registry();
    const stats = new TrafficStats(registry);
    const known = ["nlb_000000000000000a", "nlb_000000000000000b"];
    stats.setTopology(topology(known));
    for (let i = 0; i < 50_000; i++) {
      const r = parseRecord(line(`nlb_${i.toString(16).padStart(16, "0")}x`, 200 + (i % 4) * 100));
      if (r) stats.record(r);
      else stats.malformed();
    }
    for (let i = 0; i < 1000; i++) stats.record({ ...parseRecord(line(known[i % 2] ?? "", 200))! });
    stats.record({ ...parseRecord(line(known[0] ?? "", 503))! });

    expect(stats.size).toBe(2);
    const requests = await series(registry, "nginx_lb_route_requests_total");
    // Two routes, 2xx for both and 5xx for one: nothing from the 50,000 unknown route names.
    expect(requests).toHaveLength(3);
    expect(requests.every((l) => known.some((k) => l.includes(`upstream="${k}"`)))).toBe(true);
    expect(await series(registry, "nginx_lb_route_upstream_response_seconds_count")).toHaveLength(2);
    expect((await series(registry, "nginx_lb_traffic_records_ignored_total")).join("\n")).toContain(
      'reason="unknown_route"} 50000',
    );
    expect(stats.totals().get(known[0] ?? "")).toMatchObject({ requests: 501, errors: 1 });
  });

  it("keeps only counted routes in a sample of the rate window, and rates against it are rates against all", () => {
    const stats = new TrafficStats(new Registry());
    const known = ["nlb_000000000000000a", "nlb_000000000000000b", "nlb_000000000000000c"];
    stats.setTopology(topology(known, ["127.0.0.2:80"]));
    stats.record(parseRecord(line(known[0] ?? "", 200, "0.004", "127.0.0.2:80"))!);
    const older = { at: 1000, all: stats.totals(), counted: stats.totals(true) };
    expect([...older.counted.keys()]).toEqual([known[0]]);
    expect(older.all.size).toBe(3);
    stats.record(parseRecord(line(known[0] ?? "", 502, "0.004", "127.0.0.2:80"))!);
    stats.record(parseRecord(line(known[1] ?? "", 200, "0.004", "127.0.0.2:80"))!);
    const newer = { at: 3000, totals: stats.totals() };
    expect(rates({ at: older.at, totals: older.counted }, newer)).toEqual(
      rates({ at: older.at, totals: older.all }, newer),
    );
    expect(rates({ at: older.at, totals: older.counted }, newer).get(known[1] ?? "")?.requestsPerSecond).toBe(0.5);
  });

  it("keeps a route's counters and endpoints through a topology that kept its view, and follows a new view", () => {
    const stats = new TrafficStats(new Registry());
    const A = "nlb_000000000000000a";
    const first = topology([A, "nlb_000000000000000b"], ["127.0.0.2:80", "127.0.0.3:80"]);
    stats.setTopology(first);
    const rec = (addr: string) => parseRecord(line(A, 200, "0.004", addr))!;
    stats.record(rec("127.0.0.3:80"));
    // The same view objects, as compile keeps them for unchanged routes, under a new topology object.
    stats.setTopology({ servers: first.servers.map((s) => ({ ...s })) });
    stats.record(rec("127.0.0.3:80"));
    expect(stats.totals().get(A)?.endpoints.get("127.0.0.3:80")).toEqual({ requests: 2, errors: 0 });
    // A new view without that endpoint: its counters go, and a record naming it is not counted.
    stats.setTopology(topology([A, "nlb_000000000000000b"], ["127.0.0.2:80"]));
    stats.record(rec("127.0.0.3:80"));
    expect(stats.totals().get(A)?.endpoints.has("127.0.0.3:80")).toBe(false);
    expect(stats.totals().get(A)?.requests).toBe(3);
  });

  it("drops the series of routes the model no longer has", async () => {
    const registry = new Registry();
    const stats = new TrafficStats(registry);
    stats.setTopology(topology(["nlb_000000000000000a", "nlb_000000000000000b"]));
    stats.record(parseRecord(line("nlb_000000000000000a", 200))!);
    stats.record(parseRecord(line("nlb_000000000000000b", 200))!);
    stats.setTopology(topology(["nlb_000000000000000b"]));
    const requests = await series(registry, "nginx_lb_route_requests_total");
    expect(requests).toHaveLength(1);
    expect(requests[0]).toContain("nlb_000000000000000b");
    expect(stats.size).toBe(1);
  });
});

const routeCounts = (o: Partial<RouteCounts> = {}): RouteCounts => ({ ...emptyCounts(), ...o });

describe("traffic counts from nginx", () => {
  const A = "nlb_000000000000000a";

  it("prints whole bucket counts exactly as prom-client's own histogram prints the same observations", async () => {
    const values = [0.001, 0.004, 0.005, 0.03, 0.03, 0.7, 3, 12];
    const mine = new Registry();
    const stats = new TrafficStats(mine);
    stats.setTopology(topology([A]));
    const buckets = new Array<number>(HISTOGRAM_BUCKETS.length + 1).fill(0);
    for (const v of values) {
      const i = HISTOGRAM_BUCKETS.findIndex((b) => v <= b);
      const at = i < 0 ? HISTOGRAM_BUCKETS.length : i;
      buckets[at] = (buckets[at] ?? 0) + 1;
    }
    const sum = values.reduce((a, b) => a + b, 0);
    stats.add({
      routes: new Map([[A, routeCounts({ upstream: buckets, upstreamSeconds: sum })]]),
      endpoints: new Map(),
    });
    const theirs = new Registry();
    const h = new Histogram({
      name: "nginx_lb_route_upstream_response_seconds",
      help: "x",
      labelNames: ["route", "upstream"],
      buckets: [...HISTOGRAM_BUCKETS],
      registers: [theirs],
    });
    for (const v of values) h.observe({ route: "a.test:8080/r0", upstream: A }, v);
    const lines = async (r: Registry) =>
      (await r.metrics()).split("\n").filter((l) => l.startsWith("nginx_lb_route_upstream_response_seconds_"));
    expect(await lines(mine)).toEqual(await lines(theirs));
  });

  it("counts per route and per endpoint; endpoints and routes outside the model only as ignored; removed ones lose their series", async () => {
    const registry = new Registry();
    const stats = new TrafficStats(registry);
    stats.setTopology(topology([A], ["127.0.0.2:80", "127.0.0.3:80"]));
    const counts = routeCounts({ byClass: { "1xx": 0, "2xx": 7, "3xx": 0, "4xx": 1, "5xx": 2 }, bytes: 1000 });
    stats.add({
      routes: new Map([
        [A, counts],
        ["nlb_00000000000000ff", counts],
        ["", routeCounts({ byClass: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 3, "5xx": 0 } })],
      ]),
      endpoints: new Map([
        [
          A,
          new Map([
            ["127.0.0.2:80", { requests: 8, errors: 0 }],
            ["127.0.0.3:80", { requests: 3, errors: 3 }],
            ["10.9.9.9:80", { requests: 5, errors: 1 }],
          ]),
        ],
      ]),
    });
    const m = await registry.metrics();
    expect(m).toContain(
      'nginx_lb_route_requests_total{route="a.test:8080/r0",upstream="nlb_000000000000000a",class="2xx"} 7',
    );
    expect(m).toContain('nginx_lb_endpoint_requests_total{route="a.test:8080/r0",endpoint="127.0.0.3:80"} 3');
    expect(m).toContain('nginx_lb_endpoint_errors_total{route="a.test:8080/r0",endpoint="127.0.0.3:80"} 3');
    expect(m).toContain('nginx_lb_endpoint_errors_total{route="a.test:8080/r0",endpoint="127.0.0.2:80"} 0');
    expect(m).not.toContain("10.9.9.9");
    expect(m).toContain('nginx_lb_traffic_records_ignored_total{reason="unknown_endpoint"} 5');
    expect(m).toContain('nginx_lb_traffic_records_ignored_total{reason="unknown_route"} 10');
    expect(m).toContain('nginx_lb_traffic_records_ignored_total{reason="no_route"} 3');
    expect(stats.totals().get(A)).toMatchObject({ requests: 10, errors: 2, bytes: 1000 });
    expect(stats.totals().get(A)?.endpoints.get("127.0.0.3:80")).toEqual({ requests: 3, errors: 3 });

    // 127.0.0.3 leaves the route: its series go, the other endpoint's stay.
    stats.setTopology(topology([A], ["127.0.0.2:80"]));
    const after = await registry.metrics();
    expect(after).not.toContain("127.0.0.3:80");
    expect(after).toContain('nginx_lb_endpoint_requests_total{route="a.test:8080/r0",endpoint="127.0.0.2:80"} 8');
    stats.setTopology(topology([]));
    expect(await series(registry, "nginx_lb_endpoint_requests_total")).toEqual([]);
  });

  it("counts a batch of records exactly as it counts them one by one", async () => {
    const B = "nlb_000000000000000b";
    const mk = (r: string, s: number, t: string, u: string, a: string) =>
      parseRecord([r, s, t, u, s, a === "" ? "-" : a].join("\t"));
    // Every path of `record`: two known routes, retries (a failed attempt before the last), 5xx, no upstream time, a
    // time on a bucket bound and past the last, an endpoint and a route outside the model, no route, a bad status.
    const batch = [
      mk(A, 200, "0.005", "0.004", "127.0.0.2:80"),
      mk(A, 200, "0.010", "0.010", "127.0.0.3:80"),
      mk(A, 502, "0.030", "0.001, 0.020", "127.0.0.2:80, 127.0.0.3:80"),
      mk(A, 503, "0.000", "-", ""),
      mk(A, 204, "12.5", "11.000", "127.0.0.2:80"),
      mk(A, 200, "0.002", "0.001", "10.9.9.9:80"),
      mk(B, 404, "0.001", "0.001", "127.0.0.2:80"),
      mk(B, 301, "0.3", "0.25", "127.0.0.2:80"),
      mk("nlb_00000000000000ff", 200, "0.001", "0.001", "127.0.0.2:80"),
      mk("", 404, "0.000", "-", ""),
      mk(A, 700, "0.001", "0.001", "127.0.0.2:80"),
    ].map((r) => {
      if (!r) throw new Error("a record of the test did not parse");
      return r;
    });
    const one = new Registry();
    const each = new TrafficStats(one);
    const all = new Registry();
    const batched = new TrafficStats(all);
    for (const s of [each, batched]) s.setTopology(topology([A, B], ["127.0.0.2:80", "127.0.0.3:80"]));
    for (const r of batch) each.record(r);
    batched.recordAll(batch.slice(0, 4));
    batched.recordAll(batch.slice(4));
    const lines = async (r: Registry) =>
      (await r.metrics())
        .split("\n")
        .filter((l) => l.startsWith("nginx_lb_"))
        .sort();
    expect(await lines(all)).toEqual(await lines(one));
    expect(batched.totals()).toEqual(each.totals());
    expect(batched.routeCounts()).toEqual(each.routeCounts());
  });
});

afterAll(cleanupNginx);

describe("traffic record file", () => {
  const log = createLogger({ level: "silent" });
  const known = "nlb_000000000000000a";

  it("counts every line nginx appends, across split writes and rotations, from a 0600 file it empties at start", async () => {
    const dir = await tempDir("nginx-lb-traffic-tail-");
    const file = trafficLogPath(dir);
    await mkdir(join(dir, "logs"));
    // Left by an earlier run, readable by all: emptied and made private.
    await writeFile(file, `${line(known, 500)}\n`.repeat(10), { mode: 0o644 });
    await chmod(file, 0o644);
    const stats = new TrafficStats(new Registry());
    stats.setTopology(topology([known]));
    const rx = await startTrafficReceiver(stats, file, log, { pollMs: 10, rotateBytes: 4096 });
    try {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(file)).size).toBe(0);
      const rec = `${line(known, 200)}\n`;
      // Half a line, then its rest: counted once, when whole.
      await appendFile(file, rec.slice(0, 20));
      await new Promise((r) => setTimeout(r, 50));
      expect(stats.totals().get(known)?.requests).toBe(0);
      await appendFile(file, rec.slice(20));
      await waitFor("the split record", () => stats.totals().get(known)?.requests === 1, 5000);
      // Well past the rotation size: the file is emptied once read, and nothing is lost or counted twice.
      for (let i = 0; i < 20; i++) await appendFile(file, rec.repeat(50));
      await waitFor("1,001 records", () => stats.totals().get(known)?.requests === 1001, 5000);
      await waitFor("the file emptied after reading", async () => (await stat(file)).size < 4096, 5000);
      await appendFile(file, `not json\n${rec}`);
      await waitFor("a record after rotation", () => stats.totals().get(known)?.requests === 1002, 5000);
      expect(stats.totals().get(known)?.errors).toBe(0);
      // Emptied by someone else: what comes after is still read.
      await truncate(file, 0);
      await appendFile(file, `${line(known, 503)}\n`);
      await waitFor("a record after an outside truncation", () => stats.totals().get(known)?.errors === 1, 5000);
    } finally {
      await rx.close();
    }
  });

  it("refuses a symlink in place of the record file", async () => {
    const dir = await tempDir("nginx-lb-traffic-link-");
    await mkdir(join(dir, "logs"));
    await writeFile(join(dir, "elsewhere"), "");
    await symlink(join(dir, "elsewhere"), trafficLogPath(dir));
    await expect(startTrafficReceiver(new TrafficStats(new Registry()), trafficLogPath(dir), log)).rejects.toThrow(
      /ELOOP|symbolic/,
    );
    await rm(join(dir, "elsewhere"));
  });
});
