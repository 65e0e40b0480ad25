import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { parseRecord, TrafficStats } from "../../src/admin/traffic.js";
import type { Topology } from "../../src/reconciler/topology.js";

const topology = (upstreams: string[]): Topology => ({
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
        endpoints: [],
      })),
    },
  ],
});
const datagram = (route: string, status: number, u = "0.004") =>
  `<190>Nov 28 12:00:00 nginx_lb: {"r":"${route}","s":"${status}","t":"0.005","u":"${u}","b":"120"}`;

/** Every label set of a metric family in the registry's output. */
async function series(registry: Registry, name: string): Promise<string[]> {
  return (await registry.metrics()).split("\n").filter((l) => l.startsWith(`${name}{`));
}

describe("traffic records", () => {
  it("parses nginx's syslog datagram, taking the last upstream time after retries", () => {
    expect(parseRecord(datagram("nlb_0123456789abcdef", 502, "0.001, 0.030"))).toEqual({
      route: "nlb_0123456789abcdef",
      status: 502,
      requestSeconds: 0.005,
      upstreamSeconds: 0.03,
      bytes: 120,
    });
    expect(parseRecord(datagram("", 404, ""))?.upstreamSeconds).toBeNull();
    expect(parseRecord("<190>garbage")).toBeNull();
    expect(parseRecord('<190>x: {"r":1}')).toBeNull();
  });

  it("keeps the per-route label set bounded by the model whatever routes the records name", async () => {
    const registry = new Registry();
    const stats = new TrafficStats(registry);
    const known = ["nlb_000000000000000a", "nlb_000000000000000b"];
    stats.setTopology(topology(known));
    for (let i = 0; i < 50_000; i++) {
      const r = parseRecord(datagram(`nlb_${i.toString(16).padStart(16, "0")}x`, 200 + (i % 4) * 100));
      if (r) stats.record(r);
      else stats.malformed();
    }
    for (let i = 0; i < 1000; i++) stats.record({ ...parseRecord(datagram(known[i % 2] ?? "", 200))! });
    stats.record({ ...parseRecord(datagram(known[0] ?? "", 503))! });

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

  it("drops the series of routes the model no longer has", async () => {
    const registry = new Registry();
    const stats = new TrafficStats(registry);
    stats.setTopology(topology(["nlb_000000000000000a", "nlb_000000000000000b"]));
    stats.record(parseRecord(datagram("nlb_000000000000000a", 200))!);
    stats.record(parseRecord(datagram("nlb_000000000000000b", 200))!);
    stats.setTopology(topology(["nlb_000000000000000b"]));
    const requests = await series(registry, "nginx_lb_route_requests_total");
    expect(requests).toHaveLength(1);
    expect(requests[0]).toContain("nlb_000000000000000b");
    expect(stats.size).toBe(1);
  });
});
