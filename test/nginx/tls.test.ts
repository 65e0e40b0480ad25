import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { alpn, get, h2get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { ROUTES_MODE, cleanupNginx, freePorts, serveNginx, tempDir, type ServedNginx } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

// Two TLS sites on one port, told apart by SNI, with certificates this test issues from its own CA.
let pool: BackendPool;
let ca: Pem;
let httpPort: number;
let tlsPort: number;
let ngx: ServedNginx;

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
  [httpPort = 0, tlsPort = 0] = await freePorts(2);
  const certs = await tempDir("nginx-lb-certs-");
  ca = await makeCa(certs);
  const a = await makeLeaf(ca, certs, { names: ["a.test"] });
  const b = await makeLeaf(ca, certs, { names: ["b.test", "*.b.test"], rsaBits: 2048 });
  const site = (domain: string, pem: Pem, app: string) => ({
    domain_name: domain,
    frontend_port: httpPort,
    ssl_port: tlsPort,
    ssl_certificate: pem.cert,
    ssl_certificate_key: pem.key,
    routes: {
      "/": { app, service: "web", port: pool.port },
      "/none": { app: "none", service: "web", port: pool.port },
    },
  });
  const desired = mustDesired(
    { servers: [site("a.test", a, "a"), site("b.test", b, "b")] },
    { "a-web": { "127.0.0.2": { weight: 1 } }, "b-web": { "127.0.0.3": { weight: 1 } } },
  );
  ngx = await serveNginx({ ...desired, workers: 1 });
});

afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

describe("TLS", () => {
  it.runIf(ROUTES_MODE === "dynamic")(
    "with routes pushed, nginx.conf names no site: one server per TLS port",
    async () => {
      const conf = await readFile(join(ngx.dir, "nginx.conf"), "utf8");
      expect(conf).not.toMatch(/a\.test|b\.test|ssl_reject_handshake/);
      expect(conf.match(/listen 127\.0\.0\.1:\d+ ssl http2 default_server;/g)).toHaveLength(1);
      expect(conf).toContain(`require("nginx_lb_certs").serve(${tlsPort})`);
    },
  );

  it("picks the certificate by SNI and verifies against the test CA", async () => {
    const ra = await get(`https://127.0.0.1:${tlsPort}/x`, { host: "a.test", ca: ca.cert });
    expect(ra.status).toBe(200);
    expect(ra.json<Echo>()).toMatchObject({ backend: "127.0.0.2", url: "/x" });
    const rb = await get(`https://127.0.0.1:${tlsPort}/y`, { host: "b.test", ca: ca.cert });
    expect(rb.json<Echo>()).toMatchObject({ backend: "127.0.0.3", url: "/y" });
  });

  it("tells the backend the request came over https, with the client's Host", async () => {
    const r = await get(`https://127.0.0.1:${tlsPort}/`, { host: `a.test:${tlsPort}`, ca: ca.cert });
    expect(r.json<Echo>().headers).toMatchObject({
      "x-forwarded-proto": "https",
      host: `a.test:${tlsPort}`,
      "x-forwarded-host": `a.test:${tlsPort}`,
    });
  });

  it("negotiates HTTP/2 via ALPN and serves the same routes over it", async () => {
    expect(await alpn("127.0.0.1", tlsPort, "a.test")).toBe("h2");
    const r = await h2get(`https://127.0.0.1:${tlsPort}/h2?q=1`, { host: "b.test" });
    expect(r.status).toBe(200);
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.3", url: "/h2?q=1", headers: { host: "b.test" } });
  });

  it("answers 503 for a route without endpoints over TLS too", async () => {
    const r = await get(`https://127.0.0.1:${tlsPort}/none/x`, { host: "a.test", ca: ca.cert });
    expect(r.status).toBe(503);
    expect(r.body).toContain("/none");
  });

  it("upgrades a websocket over TLS (wss) with SNI", async () => {
    // ws passes TLS options through to https.request; its types omit `servername`.
    const options = { headers: { host: "b.test" }, servername: "b.test", ca: ca.cert } as WebSocket.ClientOptions;
    const ws = new WebSocket(`wss://127.0.0.1:${tlsPort}/sock`, options);
    const reply = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("wss: no echo within 5 s")), 5_000);
      ws.once("open", () => ws.send("hi"));
      ws.once("message", (d) => {
        clearTimeout(timer);
        resolve(String(d));
      });
      ws.once("error", reject);
    });
    ws.close();
    expect(reply).toBe("127.0.0.3 /sock hi");
  });

  it("serves the same site over plain HTTP on frontend_port", async () => {
    const r = await get(`http://127.0.0.1:${httpPort}/p`, { host: "a.test" });
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.2", headers: { "x-forwarded-proto": "http" } });
  });

  it("refuses the handshake for an unknown server name instead of showing another site's certificate", async () => {
    await expect(get(`https://127.0.0.1:${tlsPort}/`, { host: "unknown.test" })).rejects.toThrow(
      /alert|handshake|socket hang up|ECONNRESET/i,
    );
  });

  it("a known SNI with an unknown Host header gets 404 from nginx, not the SNI's site", async () => {
    const r = await get(`https://127.0.0.1:${tlsPort}/`, { host: "unknown.test", servername: "a.test" });
    expect(r.headers["x-backend"]).toBeUndefined();
    expect(r.status, r.body).toBe(404);
    expect(r.body).toContain("no site");
  });
});
