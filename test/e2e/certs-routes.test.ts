import { X509Certificate } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { workerPids } from "../../src/nginx/process.js";
import { INITIAL_CERTS_FILE } from "../../src/render/tls-dynamic.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { Controller, eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePorts, tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

/**
 * `nginx-lb run --routes-mode dynamic` with TLS sites: each TLS port is one nginx server, certificates are pushed and
 * served by SNI, so a certificate rotation, a new TLS site on a port already listened on and a domain removal are
 * pushes (the nginx workers stay the same); only a new listening port reloads. Checked with real TLS handshakes.
 */

let pool: BackendPool;
let ca: Pem;
let a1: Pem;
let a2: Pem;
let b: Pem;
let c: Pem;
let dir: string;
let stateDir: string;
let servicesFile: string;
let httpPort: number;
let tlsPort: number;
let tlsPort2: number;
let lb: Controller;

type Shake = { ok: true; fingerprint: string } | { ok: false; code: string };

/** A real TLS client handshake naming `servername` (SNI): the certificate nginx chose, or why it refused. */
function handshake(port: number, servername: string): Promise<Shake> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: "127.0.0.1", port, servername, rejectUnauthorized: false });
    s.setTimeout(5_000, () => s.destroy(new Error("handshake: timeout")));
    s.once("secureConnect", () => {
      const fingerprint = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve({ ok: true, fingerprint });
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? e.message }));
  });
}

/** One HTTP/1.1 request on an open TLS connection: the status line and the body (Content-Length framed). */
function request(socket: tls.TLSSocket, path: string, host: string): Promise<{ status: string; body: string }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`${path}: no answer within 5 s`)), 5_000);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const text = buf.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1];
      if (end < 0 || length === undefined || buf.length < end + 4 + Number(length)) return;
      done(null, { status: text.slice(0, text.indexOf("\r\n")), body: text.slice(end + 4, end + 4 + Number(length)) });
    };
    const onClose = () => done(new Error(`${path}: the connection closed`));
    function done(err: Error | null, out?: { status: string; body: string }) {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      if (err) reject(err);
      else if (out) resolve(out);
    }
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

const fp = (pem: Pem) => new X509Certificate(pem.cert).fingerprint256;

function site(domain: string, app: string, pem: Pem, sslPort = tlsPort) {
  return {
    domain_name: domain,
    frontend_port: httpPort,
    ssl_port: sslPort,
    ssl_certificate: pem.cert,
    ssl_certificate_key: pem.key,
    routes: { "/": { app, service: "web", port: pool.port } },
  };
}

async function workers(): Promise<number[]> {
  const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
  return (await workerPids(master)).sort();
}

/** Waits until SNI `name` on `port` gets the certificate `pem` (or, for null, a refused handshake). */
async function served(port: number, name: string, pem: Pem | null): Promise<void> {
  await eventually(
    async () => {
      const got = await handshake(port, name);
      return pem === null ? !got.ok : got.ok && got.fingerprint === fp(pem);
    },
    15_000,
    `${name} on ${port} ${pem === null ? "refused" : "served its certificate"}`,
  );
}

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
  dir = await tempDir("nginx-lb-certs-routes-");
  ca = await makeCa(dir);
  [a1, a2, b, c] = await Promise.all([
    makeLeaf(ca, dir, { names: ["a.test"] }),
    makeLeaf(ca, dir, { names: ["a.test"], rsaBits: 2048 }),
    makeLeaf(ca, dir, { names: ["b.test"] }),
    makeLeaf(ca, dir, { names: ["c.test"] }),
  ]);
  [httpPort = 0, tlsPort = 0, tlsPort2 = 0] = await freePorts(3);
  stateDir = join(dir, "state");
  servicesFile = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(servicesFile, [site("a.test", "a", a1)]);
  await writeFile(
    backends,
    JSON.stringify({
      "a-web": { "127.0.0.2": { weight: 1 } },
      "b-web": { "127.0.0.3": { weight: 1 } },
      "c-web": { "127.0.0.4": { weight: 1 } },
    }),
  );
  lb = await startController({
    stateDir,
    services: servicesFile,
    args: ["--backends", backends, "--endpoints-mode", "dynamic", "--routes-mode", "dynamic"],
  });
  await lb.waitFor(/nginx started/);
});

afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

describe("nginx-lb run --routes-mode dynamic with TLS sites", () => {
  it("serves a TLS site by SNI from one server per TLS port, nothing per site in nginx.conf", async () => {
    await served(tlsPort, "a.test", a1);
    const r = await get(`https://127.0.0.1:${tlsPort}/x`, { host: "a.test", ca: ca.cert });
    expect(r.status).toBe(200);
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.2", url: "/x" });
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).not.toContain("a.test");
    expect(conf).toContain(`require("nginx_lb_certs").serve(${tlsPort})`);
    expect(lb.find(/"msg":"modes"/)[0]).toMatchObject({ routesMode: "dynamic", certificates: "pushed" });
  });

  it("rotates a certificate with a push: the new one is served by SNI, no reload, the start-up file is 0600", async () => {
    const before = await workers();
    // A connection made before the rotation (HTTP/1.1 keepalive) stays open and keeps being served after it.
    const open = tls.connect({ host: "127.0.0.1", port: tlsPort, servername: "a.test", ca: ca.cert });
    await new Promise((resolve, reject) => open.once("secureConnect", resolve).once("error", reject));
    try {
      expect((await request(open, "/before", "a.test")).status).toBe("HTTP/1.1 200 OK");
      await writeServices(servicesFile, [site("a.test", "a", a2)]);
      await served(tlsPort, "a.test", a2);
      const after = await request(open, "/after", "a.test");
      expect(after.status).toBe("HTTP/1.1 200 OK");
      expect(JSON.parse(after.body)).toMatchObject({ backend: "127.0.0.2", url: "/after" });
      expect(open.getPeerCertificate().fingerprint256).toBe(fp(a1));
    } finally {
      open.destroy();
    }
    const r = await get(`https://127.0.0.1:${tlsPort}/y`, { host: "a.test", ca: ca.cert });
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.2", url: "/y" });
    expect(await workers()).toEqual(before);
    expect(lb.applies("reload")).toEqual([]);
    const file = join(stateDir, INITIAL_CERTS_FILE);
    await eventually(async () => (await readFile(file, "utf8")).includes(Buffer.from(a2.cert).toString("base64")));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it("adds a TLS site on the TLS port already listened on with a push, and refuses an unknown SNI", async () => {
    const before = await workers();
    await writeServices(servicesFile, [site("a.test", "a", a2), site("b.test", "b", b)]);
    await served(tlsPort, "b.test", b);
    const r = await get(`https://127.0.0.1:${tlsPort}/z`, { host: "b.test", ca: ca.cert });
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.3", url: "/z" });
    expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    expect(await handshake(tlsPort, "unknown.test")).toMatchObject({ ok: false });
    expect(await workers()).toEqual(before);
    expect(lb.applies("reload")).toEqual([]);
  });

  it("refuses a bad certificate at validation: nothing is pushed, the site keeps its certificate", async () => {
    const before = await workers();
    const bad = { ...site("b.test", "b", b), ssl_certificate_key: a2.key };
    await writeServices(servicesFile, [site("a.test", "a", a2), bad]);
    const err = await lb.waitFor(/services.json is invalid/);
    expect(JSON.stringify(err["errors"])).toContain("servers[1].ssl_certificate");
    expect(await handshake(tlsPort, "b.test")).toMatchObject({ ok: true, fingerprint: fp(b) });
    expect(await workers()).toEqual(before);
  });

  it("removes a domain with a push: its handshakes are refused, the other site stays", async () => {
    const before = await workers();
    await writeServices(servicesFile, [site("a.test", "a", a2)]);
    await served(tlsPort, "b.test", null);
    expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    const plain = await get(`http://127.0.0.1:${httpPort}/`, { host: "b.test" });
    expect(plain.status).toBe(404);
    expect(await workers()).toEqual(before);
    expect(lb.applies("reload")).toEqual([]);
  });

  it("a new TLS port reloads once, and the sites already served keep serving", async () => {
    await writeServices(servicesFile, [site("a.test", "a", a2), site("c.test", "c", c, tlsPort2)]);
    await served(tlsPort2, "c.test", c);
    const r = await get(`https://127.0.0.1:${tlsPort2}/`, { host: "c.test", ca: ca.cert });
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.4" });
    expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    // The handshake may succeed a moment before the controller logs the apply.
    await eventually(async () => lb.applies("reload").length > 0, 10_000, "the reload logged");
    expect(lb.applies("reload")).toHaveLength(1);
  });

  it("never writes key material to its log", () => {
    const log = lb.lines.map((l) => JSON.stringify(l)).join("\n");
    expect(log).not.toMatch(/PRIVATE KEY/);
    for (const pem of [a1, a2, b, c]) {
      const body = pem.key.split("\n").slice(1, 2).join("");
      expect(body.length).toBeGreaterThan(20);
      expect(log).not.toContain(body);
      expect(log).not.toContain(Buffer.from(pem.key).toString("base64").slice(0, 40));
    }
  });
});
