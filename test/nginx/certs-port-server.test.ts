import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certTable, encodeCerts, pushCerts } from "../../src/nginx/certs-push.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { ensureTlsPlaceholder } from "../../src/nginx/tls-placeholder.js";
import { writeRendered } from "../../src/nginx/files.js";
import { LUA_MODULES, dynamicHttpLines, dynamicMainLines } from "../../src/render/dynamic.js";
import type { RenderOptions } from "../../src/render/index.js";
import { certsControlLines, certsFiles, renderTlsPortServer } from "../../src/render/tls-dynamic.js";
import { alpn, h2get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePorts, startStandaloneNginx, tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

// The shape routes mode dynamic uses: one `server` per TLS port and nothing per site (renderTlsPortServer), here with a
// fixed body instead of the router's lines (test/e2e/certs-routes.test.ts runs it with the router, through the daemon). nginx is started on the render functions' own lines; what it shows is how
// this shape answers, in particular how it refuses an unknown SNI (it has no per-site server for nginx to miss).
const TOKEN = "0123456789abcdef0123456789abcdef";
let a: Pem;
let w: Pem;
let tlsPort: number;
let controlPort: number;

type Shake = { ok: true; fingerprint: string } | { ok: false; code: string };

function handshake(servername?: string): Promise<Shake> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port: tlsPort,
      ...(servername !== undefined ? { servername } : {}),
      rejectUnauthorized: false,
    });
    s.setTimeout(5_000, () => s.destroy(new Error("handshake: timeout")));
    s.once("secureConnect", () => {
      const fingerprint = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve({ ok: true, fingerprint });
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? e.message }));
  });
}

beforeAll(async () => {
  const dir = await tempDir("nginx-lb-port-server-");
  const ca = await makeCa(dir);
  [a, w] = await Promise.all([makeLeaf(ca, dir, { names: ["a.test"] }), makeLeaf(ca, dir, { names: ["*.w.test"] })]);
  [tlsPort = 0, controlPort = 0] = await freePorts(2);
  const made = await ensureTlsPlaceholder(dir);
  if (!made.ok) throw new Error(made.error);
  const o: RenderOptions = {
    dir,
    controlPort,
    listenHost: "127.0.0.1",
    endpointsMode: "dynamic",
    pushToken: TOKEN,
    luaSource: balancerLuaSource(),
    certsMode: "pushed",
    tlsPlaceholder: { cert: made.cert, key: made.key },
  };
  const conf = [
    ...dynamicMainLines(o),
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/logs/error.log warn;`,
    `events {}`,
    `http {`,
    `    access_log off;`,
    ...dynamicHttpLines(o, dir),
    renderTlsPortServer(tlsPort, o, [`        default_type text/plain;`, `        return 200 "port server\\n";`]),
    `    server {`,
    `        listen 127.0.0.1:${controlPort};`,
    ...certsControlLines(o),
    `    }`,
    `}`,
    ``,
  ].join("\n");
  const luaFiles = LUA_MODULES.map((m) => ({ path: `lua/${m}.lua`, content: o.luaSource?.[m] ?? "", mode: 0o600 }));
  await writeRendered(dir, { conf: "", files: [...certsFiles(o), ...luaFiles], generation: "" });
  await startStandaloneNginx(conf, dir);
  const services = mustDesired({
    servers: [
      ["a.test", a],
      ["*.w.test", w],
    ].map(([domain, pem]) => ({
      domain_name: domain,
      frontend_port: 1,
      ssl_port: tlsPort,
      ssl_certificate: (pem as Pem).cert,
      ssl_certificate_key: (pem as Pem).key,
      routes: { "/": { app: "a", service: "web", port: 80 } },
    })),
  }).services;
  await pushCerts({ port: controlPort, token: TOKEN }, encodeCerts(1, certTable(services).values()));
});

afterAll(cleanupNginx);

describe("one server per TLS port", () => {
  it("serves each site's pushed certificate by SNI, wildcards included", async () => {
    expect(await handshake("a.test")).toEqual({ ok: true, fingerprint: new X509Certificate(a.cert).fingerprint256 });
    expect(await handshake("z.y.w.test")).toEqual({
      ok: true,
      fingerprint: new X509Certificate(w.cert).fingerprint256,
    });
  });

  it("negotiates HTTP/2 and serves requests on it", async () => {
    expect(await alpn("127.0.0.1", tlsPort, "a.test")).toBe("h2");
    const r = await h2get(`https://127.0.0.1:${tlsPort}/`, { host: "a.test" });
    expect(r.status).toBe(200);
    expect(r.body).toBe("port server\n");
  });

  it("refuses an unknown SNI and a handshake without SNI before showing any certificate (internal_error alert)", async () => {
    // With per-site servers nginx itself refuses with unrecognized_name; a certificate callback cannot pick the alert.
    for (const name of ["unknown.test", "w.test", undefined])
      expect(await handshake(name), String(name)).toEqual({ ok: false, code: "ERR_SSL_TLSV1_ALERT_INTERNAL_ERROR" });
  });
});
