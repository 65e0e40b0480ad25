import http, { type ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, serveNginx, type ServedNginx } from "../helpers/nginx.js";

/**
 * What dynamic routes are for: a websocket and a long streaming response through nginx stay open, unbroken, across
 * 100 routing changes, since each is a push to the same workers (a reload would end them when its old workers exit).
 */

const STREAM_IP = "127.0.0.5";
let pool: BackendPool;
let ngx: ServedNginx;
let port = 0;
let streamServer: http.Server;
let streamPort = 0;
const open = new Set<ServerResponse>();

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
  // Streams a line every 20 ms until the test ends the response.
  streamServer = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    open.add(res);
    let n = 0;
    const timer = setInterval(() => res.write(`line ${n++}\n`), 20);
    res.on("close", () => clearInterval(timer));
  });
  await new Promise<void>((r) => streamServer.listen(0, STREAM_IP, r));
  const addr = streamServer.address();
  streamPort = typeof addr === "object" && addr ? addr.port : 0;
  port = await freePort();
  ngx = await serveNginx({
    ...desired(0),
    mode: "dynamic",
    routesMode: "dynamic",
  });
});

afterAll(async () => {
  for (const res of open) res.destroy();
  await cleanupNginx();
  await new Promise((r) => streamServer.close(r));
  await pool.close();
});

/** Routing change number `i`: a route that comes and goes, and a backend_path that moves every time. */
function desired(i: number) {
  return mustDesired(
    {
      servers: [
        {
          domain_name: "long.test",
          frontend_port: port,
          routes: {
            "/stream": { app: "stream", service: "web", port: streamPort },
            "/ws": { app: "ws", service: "web", port: pool.port },
            "/moving": { app: "other", service: "web", port: pool.port, backend_path: `/v${i}` },
            ...(i % 2 === 1 ? { [`/r${i}`]: { app: "other", service: "web", port: pool.port } } : {}),
          },
        },
        ...(i % 3 === 1 ? [{ domain_name: `d${i}.test`, frontend_port: port, routes: {} }] : []),
      ],
    },
    {
      "stream-web": { [STREAM_IP]: { weight: 1 } },
      "ws-web": { "127.0.0.2": { weight: 1 } },
      "other-web": { "127.0.0.3": { weight: 1 } },
    },
  );
}

describe("long connections across routing changes", () => {
  it("a websocket and a streaming response stay open across 100 routing changes (all pushes)", async () => {
    const workers = await ngx.workerPids();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, { headers: { host: "long.test" } });
    const replies: string[] = [];
    let wsClosed = false;
    ws.on("message", (d) => replies.push(String(d)));
    ws.on("close", () => (wsClosed = true));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    let streamed = "";
    let streamError: Error | null = null;
    let streamEnded = false;
    const req = http.get({ host: "127.0.0.1", port, path: "/stream/x", headers: { host: "long.test" } }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (c: string) => (streamed += c));
      res.on("end", () => (streamEnded = true));
      res.on("error", (e) => (streamError = e));
    });
    req.on("error", (e) => (streamError = e));
    const deadline = Date.now() + 5_000;
    while (!streamed.includes("line 2") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(streamed).toContain("line 2");

    for (let i = 1; i <= 100; i++) {
      const out = await ngx.apply({ services: desired(i).services });
      expect(out.action, `change ${i}`).toBe("push");
      if (i % 10 === 0) {
        const before = replies.length;
        ws.send(`m${i}`);
        const until = Date.now() + 5_000;
        while (replies.length === before && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
        expect(replies.at(-1)).toBe(`127.0.0.2 /chat m${i}`);
        // The new routes serve at once.
        const r = await fetchVia(`/moving/a`);
        expect(r).toContain(`"url":"/v${i}/a"`);
      }
    }
    const lines = streamed.split("\n").length;
    expect(lines).toBeGreaterThan(3);
    expect(wsClosed).toBe(false);
    expect(streamError).toBeNull();
    expect(streamEnded).toBe(false);
    // The stream ends when the backend ends it, complete.
    for (const res of open) res.end("done\n");
    const until = Date.now() + 5_000;
    while (!streamEnded && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(streamEnded).toBe(true);
    expect(streamed.endsWith("done\n")).toBe(true);
    ws.close();
    expect(await ngx.workerPids()).toEqual(workers);
  }, 60_000);
});

function fetchVia(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, headers: { host: "long.test" }, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve(body));
      })
      .on("error", reject);
  });
}
