import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { parseCounters, startCounterReader, type ReadCounters } from "../../src/admin/traffic-counters.js";
import { TrafficStats } from "../../src/admin/traffic.js";
import type { Topology } from "../../src/reconciler/topology.js";
import { createLogger } from "../../src/shared/log.js";

const A = "nlb_000000000000000a";
const answer = (lines: string[]) =>
  `nginx-lb-stats 1\n${lines.map((l) => `${l}\n`).join("")}end counters=${lines.length}\n`;

const topology: Topology = {
  servers: [
    {
      domain: "a.test",
      port: 8080,
      routes: [
        {
          prefix: "/",
          label: "a.test:8080/",
          upstream: A,
          backend: "web-api:80",
          backendPath: "/",
          endpoints: [
            { address: "127.0.0.2:80", weight: 1, role: "primary" },
            { address: "[::1]:80", weight: 1, role: "primary" },
          ],
        },
      ],
    },
  ],
};

describe("nginx's counters answer", () => {
  it("parses every counter nginx_lb_stats writes", () => {
    const p = parseCounters(
      answer([
        `c ${A} 2xx 7`,
        `c ${A} 5xx 2`,
        `c ${A} 0xx 1`,
        `c - 4xx 3`,
        `b ${A} 1200`,
        `u ${A} 1 6`,
        `u ${A} 12 1`,
        `us ${A} 12040`,
        `t ${A} 2 9`,
        `ts ${A} 90`,
        `n ${A} 127.0.0.2:80 6`,
        `x ${A} 127.0.0.2:80 1`,
        `n ${A} [::1]:80 3`,
      ]),
    );
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    const r = p.counts.routes.get(A);
    expect(r?.byClass).toEqual({ "1xx": 0, "2xx": 7, "3xx": 0, "4xx": 0, "5xx": 2 });
    expect(r?.other).toBe(1);
    expect(r?.bytes).toBe(1200);
    expect(r?.upstream[0]).toBe(6);
    expect(r?.upstream[11]).toBe(1);
    expect(r?.upstreamSeconds).toBeCloseTo(12.04);
    expect(r?.request[1]).toBe(9);
    expect(r?.requestSeconds).toBeCloseTo(0.09);
    expect(p.counts.routes.get("")?.byClass["4xx"]).toBe(3);
    expect(p.counts.endpoints.get(A)?.get("127.0.0.2:80")).toEqual({ requests: 6, errors: 1 });
    expect(p.counts.endpoints.get(A)?.get("[::1]:80")).toEqual({ requests: 3, errors: 0 });
  });

  it("refuses a cut-off or foreign answer whole, naming the line", () => {
    expect(parseCounters("").ok).toBe(false);
    expect(parseCounters(`nginx-lb-stats 1\nc ${A} 2xx 7\n`)).toMatchObject({ ok: false, error: /cut off/ });
    expect(parseCounters(answer([`c ${A} 2xx 7`, `c ${A} 2xx`]))).toMatchObject({ ok: false });
    for (const bad of [
      `c ${A} 6xx 1`,
      `c ${A} 2xx -1`,
      `c ${A} 2xx 1.5`,
      `u ${A} 13 1`,
      `u ${A} 0 1`,
      `n ${A} host.example:80 1`,
      `n ${A} 127.0.0.2:80;x 1`,
      `c a;b 2xx 1`,
      `z ${A} 1`,
    ])
      expect(parseCounters(answer([bad])), bad).toMatchObject({ ok: false, error: /^line 2 / });
  });
});

describe("the counter reader", () => {
  const log = createLogger({ level: "silent" });

  it("adds every read to the figures (nginx drains what it returns), through restarts and failed reads", async () => {
    const stats = new TrafficStats(new Registry());
    stats.setTopology(topology);
    const answers: Awaited<ReturnType<ReadCounters>>[] = [
      { ok: true, status: 200, body: answer([`c ${A} 2xx 5`, `n ${A} 127.0.0.2:80 5`]) },
      // nginx restarting: nothing answers; what it held is gone with it.
      { ok: false, error: "connect ECONNREFUSED 127.0.0.1:9901" },
      // A new master: its counts start from nothing, and are simply added.
      {
        ok: true,
        status: 200,
        body: answer([`c ${A} 2xx 2`, `c ${A} 5xx 1`, `n ${A} 127.0.0.2:80 3`, `x ${A} 127.0.0.2:80 1`]),
      },
      { ok: true, status: 401, body: "missing or wrong X-Nginx-Lb-Token\n" },
      { ok: true, status: 200, body: "nginx-lb-stats 1\nc x 2xx 1\n" },
      { ok: true, status: 200, body: answer([]) },
    ];
    let tick: (() => void) | null = null;
    const reader = startCounterReader(
      stats,
      {
        read: () => Promise.resolve(answers.shift() ?? { ok: false, error: "no more" }),
        every: (_ms, fn) => {
          tick = fn;
          return () => (tick = null);
        },
      },
      log,
    );
    expect(tick).not.toBeNull();
    for (let i = 0; i < 6; i++) await reader.readNow();
    const totals = stats.totals().get(A);
    expect(totals).toMatchObject({ requests: 8, errors: 1 });
    expect(totals?.endpoints.get("127.0.0.2:80")).toEqual({ requests: 8, errors: 1 });
    await reader.close();
    expect(tick).toBeNull();
  });
});
