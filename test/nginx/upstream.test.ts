import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { loopbackIps, startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, serveNginx } from "../helpers/nginx.js";

// How upstreams behave under load and failure: weights, drains, passive health, backups, keepalive, websockets.
// Each scenario has its own site and its own backend addresses, so stopping one backend touches one scenario.
let pool: BackendPool;
let port: number;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

beforeAll(async () => {
  pool = await startBackends(loopbackIps(13));
  port = await freePort();
  const site = (domain: string, routes: Record<string, unknown>) => ({
    domain_name: domain,
    frontend_port: port,
    routes,
  });
  const route = (app: string, extra: Record<string, unknown> = {}) => ({
    app,
    service: "svc",
    port: pool.port,
    ...extra,
  });
  const desired = mustDesired(
    {
      servers: [
        site("weights.test", { "/": route("w") }),
        site("failover.test", { "/": route("f", { backup: { app: "fb", service: "svc", port: pool.port } }) }),
        site("keepalive.test", { "/": route("k") }),
        site("many.test", { "/": route("m", { backup: { app: "mb", service: "svc", port: pool.port } }) }),
        site("ws.test", { "/": route("plain"), "/ws": route("ws") }),
      ],
    },
    {
      "w-svc": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 3 }, "127.0.0.4": { weight: 0 } },
      "f-svc": { "127.0.0.5": { weight: 1 }, "127.0.0.6": { weight: 1 } },
      "fb-svc": { "127.0.0.7": { weight: 1 } },
      "k-svc": { "127.0.0.8": { weight: 1 } },
      "m-svc": Object.fromEntries(loopbackIps(4, 10).map((ip) => [ip, { weight: 1 }])),
      "mb-svc": { "127.0.0.14": { weight: 1 } },
      "ws-svc": { "127.0.0.9": { weight: 1 } },
      "plain-svc": { "127.0.0.8": { weight: 1 } },
    },
  );
  await serveNginx({ ...desired, workers: 1 });
});

afterAll(async () => {
  agent.destroy();
  await cleanupNginx();
  await pool.close();
});

/** `count` requests to one site, `concurrency` at a time; returns which backend answered each (or the status). */
async function spray(host: string, count: number, concurrency = 8): Promise<Map<string, number>> {
  const tally = new Map<string, number>();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const r = await get(`http://127.0.0.1:${port}/`, { host, agent, timeoutMs: 5_000 });
      const key = r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return tally;
}

describe("weights", () => {
  it("splits 1,000 requests 1:3 within 5%, and a weight-0 (drained) endpoint gets none", async () => {
    const tally = await spray("weights.test", 1000);
    expect([...tally.keys()].sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
    const share = (tally.get("127.0.0.3") ?? 0) / 1000;
    expect(share).toBeGreaterThan(0.7);
    expect(share).toBeLessThan(0.8);
    expect(pool.get("127.0.0.4").requests()).toBe(0);
  });
});

describe("passive health and backups", () => {
  it("skips a failed primary without failing a request", async () => {
    await pool.get("127.0.0.5").stop();
    const tally = await spray("failover.test", 60);
    expect(Object.fromEntries(tally)).toEqual({ "127.0.0.6": 60 });
  });

  it("hands every request to the backup once all primaries are down, and never before", async () => {
    expect(pool.get("127.0.0.7").requests()).toBe(0);
    await pool.get("127.0.0.6").stop();
    const tally = await spray("failover.test", 60);
    expect(Object.fromEntries(tally)).toEqual({ "127.0.0.7": 60 });
  });
  it("reaches the backup on the very first request when more primaries are down than a fixed retry count", async () => {
    await Promise.all(loopbackIps(4, 10).map((ip) => pool.get(ip).stop()));
    const tally = await spray("many.test", 20, 1);
    expect(Object.fromEntries(tally)).toEqual({ "127.0.0.14": 20 });
  });
});

describe("recovery", () => {
  it("sends traffic back to the primaries once they answer again after fail_timeout (10 s)", async () => {
    await pool.get("127.0.0.5").start();
    await pool.get("127.0.0.6").start();
    const deadline = Date.now() + 15_000;
    let backend = "";
    while (Date.now() < deadline) {
      const r = await get(`http://127.0.0.1:${port}/`, { host: "failover.test", agent });
      expect(r.status).toBe(200);
      backend = r.json<Echo>().backend;
      if (backend !== "127.0.0.7") break;
      await new Promise((res) => setTimeout(res, 250));
    }
    expect(["127.0.0.5", "127.0.0.6"]).toContain(backend);
  }, 20_000);
});

describe("upstream keepalive", () => {
  it("reuses backend connections: 300 requests over few TCP connections", async () => {
    const k = pool.get("127.0.0.8");
    const before = k.connections();
    const tally = await spray("keepalive.test", 300, 4);
    expect(tally.get("127.0.0.8")).toBe(300);
    // Without keepalive this would be 300; with it, about one per concurrent request.
    expect(k.connections() - before).toBeLessThanOrEqual(8);
  });
});

describe("websocket", () => {
  it("upgrades through a route, with the prefix mapped, and echoes both ways", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat?room=1`, { headers: { host: "ws.test" } });
    const replies: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("websocket: no echo within 5 s")), 5_000);
      ws.on("message", (d) => {
        replies.push(String(d));
        if (replies.length === 2) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.on("error", reject);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.send("hello");
    ws.send("again");
    await done;
    ws.close();
    expect(replies).toEqual(["127.0.0.9 /chat?room=1 hello", "127.0.0.9 /chat?room=1 again"]);
  });

  it("a plain request on the same site still works beside it", async () => {
    const r = await get(`http://127.0.0.1:${port}/x`, { host: "ws.test" });
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.8", url: "/x" });
  });
});
