import { X509Certificate } from "node:crypto";
import { request } from "node:http";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  certTable,
  encodeCerts,
  pushCerts,
  pushedCertsVersion,
  syncCerts,
  writeInitialCerts,
  type PushedCerts,
} from "../../src/nginx/certs-push.js";
import { PushError } from "../../src/nginx/endpoints-push.js";
import { CERTS_PATH, INITIAL_CERTS_FILE } from "../../src/render/tls-dynamic.js";
import type { Services } from "../../src/model/services.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { alpn, get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { freePorts, serveNginx, tempDir, type ServedNginx } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

// TLS sites whose certificates are pushed to nginx (certsMode "pushed"), against a twin nginx serving the same sites
// from certificate files (rendered mode), which says what "refused as today" means.
let pool: BackendPool;
let ca: Pem;
let a: Pem;
let a2: Pem;
let b: Pem;
let w: Pem;
let pushed: ServedNginx;
let tlsPort: number;
let httpPort: number;
let filesTlsPort: number;
let state: PushedCerts;
let version = 10;

type Shake = { ok: true; fingerprint: string; alpn: string | false } | { ok: false; code: string };

/** One TLS handshake to 127.0.0.1:`port` with `servername` as SNI (none when undefined); what the server showed. */
function handshake(port: number, servername?: string): Promise<Shake> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      ...(servername !== undefined ? { servername } : {}),
      rejectUnauthorized: false,
      ALPNProtocols: ["h2", "http/1.1"],
    });
    s.setTimeout(5_000, () => s.destroy(new Error("handshake: timeout")));
    s.once("secureConnect", () => {
      const fingerprint = s.getPeerCertificate().fingerprint256;
      const negotiated = s.alpnProtocol ?? false;
      s.end();
      resolve({ ok: true, fingerprint, alpn: negotiated });
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? e.message }));
  });
}

const fp = (pem: Pem) => new X509Certificate(pem.cert).fingerprint256;

function siteJson(domain: string, frontendPort: number, sslPort: number, pem: Pem) {
  return {
    domain_name: domain,
    frontend_port: frontendPort,
    ssl_port: sslPort,
    ssl_certificate: pem.cert,
    ssl_certificate_key: pem.key,
    routes: { "/": { app: domain.replace(/^\*\./, "wild-").replace(/\./g, "-"), service: "web", port: pool.port } },
  };
}

function sites(httpPort: number, sslPort: number, certs: { a: Pem; b?: Pem; w: Pem }): Services {
  const list = [siteJson("a.test", httpPort, sslPort, certs.a), siteJson("*.w.test", httpPort, sslPort, certs.w)];
  if (certs.b) list.push(siteJson("b.test", httpPort, sslPort, certs.b));
  return mustDesired({ servers: list }).services;
}

const backends = {
  "a-test-web": { "127.0.0.2": { weight: 1 } },
  "b-test-web": { "127.0.0.2": { weight: 1 } },
  "wild-w-test-web": { "127.0.0.2": { weight: 1 } },
};

/** Pushes `services`' certificates as the controller would (partial when nginx's are known), and keeps the file. */
async function sync(services: Services): Promise<void> {
  state = await syncCerts(pushed.target, state, certTable(services), ++version);
  const out = await writeInitialCerts(pushed.dir, state);
  expect(out.ok).toBe(true);
}

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
  const dir = await tempDir("nginx-lb-certs-");
  ca = await makeCa(dir);
  [a, a2, b, w] = await Promise.all([
    makeLeaf(ca, dir, { names: ["a.test"] }),
    makeLeaf(ca, dir, { names: ["a.test"], rsaBits: 2048 }),
    makeLeaf(ca, dir, { names: ["b.test"] }),
    makeLeaf(ca, dir, { names: ["*.w.test"] }),
  ]);
  const [plain = 0, sslPort = 0, filesHttp = 0, filesTls = 0] = await freePorts(4);
  httpPort = plain;
  tlsPort = sslPort;
  filesTlsPort = filesTls;
  const all = sites(httpPort, sslPort, { a, b, w });
  pushed = await serveNginx({
    services: all,
    backends: mustDesired({ servers: [] }, backends).backends,
    mode: "dynamic",
    certs: "pushed",
    workers: 2,
    // A previous controller left the certificates of a.test only: a new master serves them before any push.
    before: async (stateDir) => {
      const only = certTable(sites(httpPort, sslPort, { a, w }));
      const out = await writeInitialCerts(stateDir, { version: 1, table: new Map([...only].slice(0, 1)) });
      if (!out.ok) throw new Error(out.error);
    },
  });
  await serveNginx({
    services: sites(filesHttp, filesTls, { a, b, w }),
    backends: mustDesired({ servers: [] }, backends).backends,
    mode: "reload",
    workers: 1,
  });
});

afterAll(async () => {
  await pool.close();
});

describe("pushed certificates", () => {
  it("a new master serves the start-up certificates before any push, and nothing for the others", async () => {
    expect(await pushedCertsVersion(pushed.target)).toBe(1);
    const ra = await handshake(tlsPort, "a.test");
    expect(ra).toMatchObject({ ok: true, fingerprint: fp(a) });
    expect(await handshake(tlsPort, "b.test")).toMatchObject({ ok: false });
    // Now the controller's first push: whole, since it does not know what nginx holds.
    state = await syncCerts(pushed.target, null, certTable(pushed.desired.services), ++version);
    expect(await pushedCertsVersion(pushed.target)).toBe(version);
  });

  it("serves each site's certificate by SNI: exact names, any case, a trailing dot, wildcards any depth", async () => {
    for (const [name, pem] of [
      ["a.test", a],
      ["A.Test.", a],
      ["b.test", b],
      ["x.w.test", w],
      ["y.x.w.test", w],
      // Not a name services.json allows, but nginx matches it with *.w.test: both modes pick the same site.
      ["x_y.w.test", w],
    ] as const)
      expect(await handshake(tlsPort, name), name).toMatchObject({ ok: true, fingerprint: fp(pem) });
  });

  it("refuses an unknown SNI, and a handshake without SNI, exactly as with certificate files", async () => {
    for (const name of ["unknown.test", "w.test", undefined, "a..test", `${"a".repeat(250)}.test`]) {
      const withFiles = await handshake(filesTlsPort, name);
      expect(withFiles, String(name)).toEqual({ ok: false, code: "ERR_SSL_TLSV1_UNRECOGNIZED_NAME" });
      expect(await handshake(tlsPort, name), String(name)).toEqual(withFiles);
    }
  });

  it("negotiates HTTP/2 via ALPN and serves the site's routes over the pushed certificate (verified by the CA)", async () => {
    expect(await alpn("127.0.0.1", tlsPort, "b.test")).toBe("h2");
    const r = await get(`https://127.0.0.1:${tlsPort}/x?q=1`, { host: "x.w.test", ca: ca.cert });
    expect(r.status).toBe(200);
    expect(r.json<Echo>()).toMatchObject({ backend: "127.0.0.2", url: "/x?q=1" });
  });

  it("rotates a certificate with a push: new handshakes get it, no reload, the start-up file follows (0600)", async () => {
    const workers = await pushed.workerPids();
    const before = state.version;
    await sync(sites(httpPort, tlsPort, { a: a2, b, w }));
    expect(state.version).toBeGreaterThan(before);
    expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    expect(await handshake(tlsPort, "b.test")).toMatchObject({ ok: true, fingerprint: fp(b) });
    const r = await get(`https://127.0.0.1:${tlsPort}/`, { host: "a.test", ca: ca.cert });
    expect(r.status).toBe(200);
    expect(await pushed.workerPids()).toEqual(workers);
    const file = join(pushed.dir, INITIAL_CERTS_FILE);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, "utf8")).toMatch(new RegExp(`^nginx-lb-certs version=${state.version}\n`));
  });

  it("forgets a site's certificate with a partial push (domain removed) and takes it back, without a reload", async () => {
    const workers = await pushed.workerPids();
    await sync(sites(httpPort, tlsPort, { a: a2, w }));
    expect(await handshake(tlsPort, "b.test")).toMatchObject({ ok: false });
    expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    await sync(sites(httpPort, tlsPort, { a: a2, b, w }));
    expect(await handshake(tlsPort, "b.test")).toMatchObject({ ok: true, fingerprint: fp(b) });
    expect(await pushed.workerPids()).toEqual(workers);
  });

  it("a new master with an unreadable start-up file still starts, says why, and refuses TLS until the push", async () => {
    const [plain = 0, ssl = 0] = await freePorts(2);
    const other = await serveNginx({
      services: sites(plain, ssl, { a, w }),
      backends: mustDesired({ servers: [] }, backends).backends,
      mode: "dynamic",
      certs: "pushed",
      workers: 1,
      before: (stateDir) => writeFile(join(stateDir, INITIAL_CERTS_FILE), "nginx-lb-certs version=1\nsite 1 a.test\n"),
    });
    const log = await other.errorLog();
    expect(log, log).toMatch(/ignoring the start-up certificates .*\(line 2: must be/);
    expect(await pushedCertsVersion(other.target)).toBeNull();
    expect(await handshake(ssl, "a.test")).toMatchObject({ ok: false });
    await syncCerts(other.target, null, certTable(other.desired.services), 1);
    expect(await handshake(ssl, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a) });
    await other.stop();
  });

  describe("refuses bad pushes and keeps serving the previous certificates", () => {
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    const line = (name: string, cert: string, key: string) =>
      `site ${tlsPort} ${name} 00000000000000ff ${b64(cert)} ${b64(key)}`;
    const bad: [string, () => string, RegExp][] = [
      [
        "a certificate that is not PEM",
        () => `nginx-lb-certs version=999\n${line("a.test", "hello", a.key)}\nend sites=1\n`,
        /not a PEM certificate/,
      ],
      [
        "a PEM certificate that does not parse",
        () =>
          `nginx-lb-certs version=999\n${line("a.test", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", a.key)}\nend sites=1\n`,
        /does not parse/,
      ],
      [
        "a key that does not belong to the certificate",
        () => `nginx-lb-certs version=999\n${line("a.test", a.cert, b.key)}\nend sites=1\n`,
        /key does not belong/,
      ],
      [
        "a text cut off before its end line",
        () => `nginx-lb-certs version=999\n${line("a.test", a.cert, a.key)}\n`,
        /missing the final/,
      ],
      [
        "a count that does not match",
        () => `nginx-lb-certs version=999\n${line("a.test", a.cert, a.key)}\nend sites=2\n`,
        /end sites=1' expected/,
      ],
      [
        "a name outside the domain grammar",
        () => `nginx-lb-certs version=999\n${line("a.test;x", a.cert, a.key)}\nend sites=1\n`,
        /lower-case host name/,
      ],
      [
        "a drop in a whole push",
        () => `nginx-lb-certs version=999\ndrop ${tlsPort} a.test\nend sites=1\n`,
        /only allowed in a partial push/,
      ],
      [
        "a partial push against a version nginx does not hold",
        () => encodeCerts(999, [], { base: 3, drops: [`${tlsPort} a.test`] }),
        /partial push against version 3/,
      ],
    ];
    it.each(bad)("%s", async (_what, text, why) => {
      const held = await pushedCertsVersion(pushed.target);
      const err = await pushCerts(pushed.target, text()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PushError);
      expect((err as PushError).status).toBeGreaterThanOrEqual(400);
      expect((err as PushError).message).toMatch(why);
      // Never an echo of what was sent.
      expect((err as PushError).message).not.toMatch(/BEGIN|PRIVATE|[A-Za-z0-9+/]{40}/);
      expect(await pushedCertsVersion(pushed.target)).toBe(held);
      expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    });

    it("a push without the token, or with a wrong one", async () => {
      const text = encodeCerts(999, certTable(sites(httpPort, tlsPort, { a: b, w })).values());
      for (const target of [{ port: pushed.controlPort }, { port: pushed.controlPort, token: "0".repeat(32) }]) {
        const err = await pushCerts(target, text).catch((e: unknown) => e);
        expect((err as PushError).status).toBe(401);
        await expect(pushedCertsVersion(target)).rejects.toMatchObject({ status: 401 });
      }
      expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    });

    it("a body over the limit (refused by nginx before it is read)", async () => {
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: "127.0.0.1",
            port: pushed.controlPort,
            path: CERTS_PATH,
            method: "POST",
            agent: false,
            headers: { "x-nginx-lb-token": pushed.pushToken, "content-length": 200 * 1024 * 1024 },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
            req.destroy();
          },
        );
        req.on("error", reject);
        req.write("nginx-lb-certs version=999\n");
      });
      expect(status).toBe(413);
      expect(await handshake(tlsPort, "a.test")).toMatchObject({ ok: true, fingerprint: fp(a2) });
    });

    it("logs no key material", async () => {
      const log = await pushed.errorLog();
      expect(log).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE/);
      for (const pem of [a, a2, b, w]) {
        const body = pem.key.split("\n")[1] ?? "";
        expect(body.length).toBeGreaterThan(20);
        expect(log).not.toContain(body);
        expect(log).not.toContain(Buffer.from(pem.key).toString("base64").slice(0, 40));
      }
      expect(log).not.toMatch(/stale global SSL error/);
    });
  });
});
