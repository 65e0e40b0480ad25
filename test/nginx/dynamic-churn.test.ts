import { Agent } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { BackendSet } from "../../src/model/backends.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { hostGet } from "../helpers/http.js";
import { services } from "../helpers/model.js";
import { cleanupNginx, serveNginx, type ServedNginx } from "../helpers/nginx.js";
import { waitFor } from "../helpers/wait.js";

const HOST = "churn.test";
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

let pool: BackendPool;
let ng: ServedNginx;

const only = (...ips: string[]): BackendSet => ({
  "app-web": Object.fromEntries(ips.map((ip, i) => [ip, { weight: i + 1 }])),
});

beforeAll(async () => {
  pool = await startBackends(IPS, { reply: "address" });
  ng = await serveNginx({
    mode: "dynamic",
    services: (fp) => services(HOST, fp, [{ prefix: "/", app: "app", service: "web", port: pool.port }]),
    workers: 2,
  });
});

afterAll(async () => {
  await cleanupNginx();
  await pool?.close();
});

describe("endpoint churn in dynamic mode", () => {
  it("moves traffic on every one of 200 pushes with zero reloads", async () => {
    const workers = await ng.workerPids();
    expect(workers.length).toBe(2);
    for (let i = 0; i < 200; i++) {
      const ip = IPS[i % IPS.length] ?? "";
      await ng.push(only(ip));
      // The very next request already sees the new set: no polling, no one-second timer.
      const r = await hostGet(ng.port, HOST, "/");
      expect(r, `push ${i}`).toMatchObject({ status: 200, body: ip });
    }
    expect(await ng.workerPids()).toEqual(workers);
    expect(await ng.errorLog()).not.toMatch(/reconfiguring|signal process started/);
  });

  it("keeps a websocket open and working across 100 pushes", async () => {
    await ng.push(only("127.0.0.2"));
    const ws = new WebSocket(`ws://127.0.0.1:${ng.port}/`, { headers: { host: HOST } });
    const replies: string[] = [];
    ws.on("message", (m) => replies.push(String(m)));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    try {
      for (let i = 0; i < 100; i++) {
        // Half the pushes drop the websocket's own backend from the set: established connections are not cut.
        await ng.push(i % 2 === 0 ? only("127.0.0.3", "127.0.0.4") : only("127.0.0.2", "127.0.0.4"));
        const reply = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no reply to m${i} within 5 s`)), 5000);
          ws.once("message", () => (clearTimeout(timer), resolve()));
        });
        ws.send(`m${i}`);
        await reply;
        expect(replies[i]).toBe(`127.0.0.2 / m${i}`);
      }
      expect(ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      ws.terminate();
    }
  });

  it("never fails a request while pushes race with traffic", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const sets = [
      only("127.0.0.2"),
      only("127.0.0.2", "127.0.0.3"),
      only("127.0.0.3", "127.0.0.4"),
      only("127.0.0.4", "127.0.0.2", "127.0.0.3"),
    ];
    await ng.push(sets[0] ?? {});
    let pushing = true;
    const failures: string[] = [];
    let served = 0;
    const seen = new Set<string>();
    const client = async () => {
      // Bounded: stops when pushing ends, or after 20,000 requests whatever happens.
      for (let n = 0; n < 20_000 && pushing; n++) {
        const r = await hostGet(ng.port, HOST, "/", agent).catch((e: Error) => ({ status: 0, body: e.message }));
        if (r.status !== 200 || !IPS.includes(r.body)) failures.push(`${r.status} ${r.body}`);
        else {
          served++;
          seen.add(r.body);
        }
      }
    };
    const clients = [client(), client(), client(), client()];
    try {
      for (let i = 0; i < 100; i++) {
        await ng.push(sets[i % sets.length] ?? {});
        // Let traffic flow between pushes, so every push lands among requests in flight.
        const mark = served + failures.length;
        await waitFor("traffic after a push", async () => (served + failures.length >= mark + 8 ? true : undefined));
      }
    } finally {
      pushing = false;
      await Promise.all(clients);
      agent.destroy();
    }
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThanOrEqual(800);
    expect([...seen].sort()).toEqual(IPS);
  });
});
