import { X509Certificate, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { chmod, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServices, type Services } from "../../src/model/services.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { certChanges, certTable, checkCertificates, encodeCerts } from "../../src/nginx/certs-push.js";
import { PLACEHOLDER_FILE, ensureTlsPlaceholder } from "../../src/nginx/tls-placeholder.js";
import { dynamicHttpLines, dynamicMainLines } from "../../src/render/dynamic.js";
import { renderNginxConf, type RenderOptions } from "../../src/render/index.js";
import { RenderBug } from "../../src/render/tokens.js";
import { certsControlLines, certsFiles, renderTlsPortServer } from "../../src/render/tls-dynamic.js";
import { selfSignedPem } from "../../src/tls/self-signed.js";
import { mustDesired } from "../helpers/model.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

let a: Pem;
let a2: Pem;
let b: Pem;
let placeholder: { cert: string; key: string };

function model(list: { domain: string; pem: Pem; ssl?: number }[]): Services {
  return mustDesired({
    servers: list.map(({ domain, pem, ssl }) => ({
      domain_name: domain,
      frontend_port: 8080,
      ssl_port: ssl ?? 8443,
      ssl_certificate: pem.cert,
      ssl_certificate_key: pem.key,
      routes: { "/": { app: "a", service: "web", port: 80 } },
    })),
  }).services;
}

beforeAll(async () => {
  const dir = await tempDir("nginx-lb-certs-unit-");
  const ca = await makeCa(dir);
  [a, a2, b] = await Promise.all([
    makeLeaf(ca, dir, { names: ["a.test"] }),
    makeLeaf(ca, dir, { names: ["a.test"] }),
    makeLeaf(ca, dir, { names: ["*.b.test"] }),
  ]);
  const made = await ensureTlsPlaceholder(dir);
  if (!made.ok) throw new Error(made.error);
  placeholder = { cert: made.cert, key: made.key };
});

afterAll(cleanupNginx);

describe("certificate table and push text", () => {
  it("keys each TLS site by port and domain, with an id that changes with the certificate or key", () => {
    const t1 = certTable(
      model([
        { domain: "a.test", pem: a },
        { domain: "*.b.test", pem: b, ssl: 9443 },
      ]),
    );
    expect([...t1.keys()]).toEqual(["8443 a.test", "9443 *.b.test"]);
    const site = t1.get("8443 a.test");
    expect(site?.id).toMatch(/^[0-9a-f]{16}$/);
    expect(certTable(model([{ domain: "a.test", pem: a }])).get("8443 a.test")?.id).toBe(site?.id);
    expect(certTable(model([{ domain: "a.test", pem: a2 }])).get("8443 a.test")?.id).not.toBe(site?.id);
  });

  it("keeps the entries of a previous table whose certificate and key are the same, and makes the others anew", () => {
    const t1 = certTable(
      model([
        { domain: "a.test", pem: a },
        { domain: "*.b.test", pem: b, ssl: 9443 },
      ]),
    );
    const t2 = certTable(
      model([
        { domain: "a.test", pem: a2 },
        { domain: "*.b.test", pem: b, ssl: 9443 },
      ]),
      t1,
    );
    expect(t2.get("9443 *.b.test")).toBe(t1.get("9443 *.b.test"));
    expect(t2.get("8443 a.test")?.id).toBe(certTable(model([{ domain: "a.test", pem: a2 }])).get("8443 a.test")?.id);
    expect(t2.get("8443 a.test")?.id).not.toBe(t1.get("8443 a.test")?.id);
    // Another port is another site, even with the same certificate.
    const t3 = certTable(model([{ domain: "a.test", pem: a, ssl: 10443 }]), t1);
    expect([...t3.keys()]).toEqual(["10443 a.test"]);
    expect(t3.get("10443 a.test")?.port).toBe(10443);
  });

  it("encodes a whole push and a partial one in the grammar the Lua checks", () => {
    const t = certTable(model([{ domain: "a.test", pem: a }]));
    const site = t.get("8443 a.test");
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    expect(encodeCerts(7, t.values())).toBe(
      `nginx-lb-certs version=7\nsite 8443 a.test ${site?.id} ${b64(a.cert)} ${b64(a.key)}\nend sites=1\n`,
    );
    expect(encodeCerts(8, [], { base: 7, drops: ["8443 a.test"] })).toBe(
      "nginx-lb-certs version=8 base=7\ndrop 8443 a.test\nend sites=1\n",
    );
    // Every line but the header and end holds no line break of its own: base64 keeps PEM on one line.
    expect(encodeCerts(7, t.values()).split("\n")).toHaveLength(4);
    expect(() => encodeCerts(9, [], { base: 8, drops: ["8443 a.test;x"] })).toThrow(RenderBug);
  });

  it("sends only what changed, and drops what is gone", () => {
    const before = certTable(
      model([
        { domain: "a.test", pem: a },
        { domain: "*.b.test", pem: b },
      ]),
    );
    const after = certTable(model([{ domain: "a.test", pem: a2 }]));
    const { changed, dropped } = certChanges(before, after);
    expect(changed.map((s) => `${s.port} ${s.name}`)).toEqual(["8443 a.test"]);
    expect(dropped).toEqual(["8443 *.b.test"]);
    expect(certChanges(after, after)).toEqual({ changed: [], dropped: [] });
  });

  it("checks certificates as services validation does, naming the field", () => {
    const raw = {
      servers: [
        {
          domain_name: "a.test",
          frontend_port: 8080,
          ssl_port: 8443,
          ssl_certificate: a.cert,
          ssl_certificate_key: b.key,
          routes: { "/": { app: "a", service: "web", port: 80 } },
        },
      ],
    };
    const parsed = parseServices(raw);
    if (!parsed.ok) throw new Error("shape-valid input expected");
    expect(checkCertificates(parsed.value)).toEqual([
      expect.objectContaining({ code: "tls_invalid", path: "servers[0].ssl_certificate_key" }),
    ]);
    expect(checkCertificates(model([{ domain: "a.test", pem: a }]))).toEqual([]);
  });
});

describe("placeholder certificate", () => {
  it("is a self-signed certificate of the key, without expiry, that OpenSSL reads", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const now = new Date("2030-01-02T03:04:05Z");
    const pem = selfSignedPem(privateKey, "test placeholder", Buffer.from("0102030405", "hex"), now);
    const cert = new X509Certificate(pem.cert);
    expect(cert.subject).toBe("CN=test placeholder");
    expect(cert.issuer).toBe("CN=test placeholder");
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(pem.key))).toBe(true);
    expect(new Date(cert.validFrom).toISOString()).toBe("2030-01-02T03:04:05.000Z");
    expect(new Date(cert.validTo).getUTCFullYear()).toBe(9999);
  });

  it("is made once per state dir (0600) and kept; made again when the file is unreadable", async () => {
    const dir = await tempDir();
    const first = await ensureTlsPlaceholder(dir);
    expect(first).toMatchObject({ ok: true, created: true });
    const path = join(dir, PLACEHOLDER_FILE);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await chmod(path, 0o644);
    const again = await ensureTlsPlaceholder(dir);
    expect(again).toMatchObject({ ok: true, created: false });
    expect(again.ok && first.ok && again.cert === first.cert && again.key === first.key).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await writeFile(path, "garbage");
    const remade = await ensureTlsPlaceholder(dir);
    expect(remade).toMatchObject({ ok: true, created: true });
    expect(await readFile(path, "utf8")).toContain("BEGIN CERTIFICATE");
  });
});

describe("rendering pushed certificates", () => {
  const base = (dir: string): RenderOptions => ({
    dir,
    controlPort: 9901,
    endpointsMode: "dynamic",
    pushToken: "0123456789abcdef0123456789abcdef",
    luaSource: balancerLuaSource(),
    certsMode: "pushed",
    tlsPlaceholder: placeholder,
  });

  it("refuses to render without dynamic mode, the placeholder or the module", () => {
    const desired = { services: model([{ domain: "a.test", pem: a }]), backends: {} };
    const o = base("/var/lib/nginx-lb");
    expect(() => renderNginxConf(desired, { ...o, endpointsMode: "reload" })).toThrow(RenderBug);
    expect(() => renderNginxConf(desired, { ...o, tlsPlaceholder: { cert: "x", key: "y" } })).toThrow(RenderBug);
    const { nginx_lb_certs: _gone, ...rest } = balancerLuaSource();
    expect(() => renderNginxConf(desired, { ...o, luaSource: rest })).toThrow(RenderBug);
  });

  it("names no site's certificate: per-site servers take theirs by SNI through the Lua (nginx -t passes)", async () => {
    const dir = await tempDir();
    const desired = {
      services: model([
        { domain: "a.test", pem: a },
        { domain: "*.b.test", pem: b },
      ]),
      backends: {},
    };
    const r = renderNginxConf(desired, base(dir));
    expect(r.conf).toContain(`ssl_certificate_by_lua_block { require("nginx_lb_certs").serve(8443) }`);
    expect(r.conf).toContain(`ssl_certificate ${dir}/tls/placeholder.crt;`);
    expect(r.conf).toContain(`require("nginx_lb_certs").load("${dir}/certificates.push")`);
    expect(r.conf).toContain("location = /nginx-lb/certificates {");
    // The port's default server still refuses unknown names itself.
    expect(r.conf).toContain("ssl_reject_handshake on;");
    expect(r.conf).not.toContain(a.cert.split("\n")[1]);
    expect(r.files.map((f) => f.path).filter((p) => p.startsWith("tls/"))).toEqual([
      "tls/placeholder.crt",
      "tls/placeholder.key",
    ]);
    expect(r.files.every((f) => f.mode === 0o600)).toBe(true);
    const t = await checkConfig(r, dir);
    expect(t.ok, t.output).toBe(true);
  });

  it("one server per TLS port (routes pushed): the shape nginx 1.22 accepts", async () => {
    const dir = await tempDir();
    const o = base(dir);
    const conf = [
      ...dynamicMainLines(o),
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/logs/error.log warn;`,
      `events {}`,
      `http {`,
      ...dynamicHttpLines(o, dir),
      renderTlsPortServer(8443, o, [`        return 404;`]),
      `    server {`,
      `        listen 127.0.0.1:9901;`,
      ...certsControlLines(o),
      `    }`,
      `}`,
      ``,
    ].join("\n");
    expect(conf).toContain("listen 8443 ssl http2 default_server;");
    const files = [
      ...certsFiles(o),
      ...["nginx_lb_balancer", "nginx_lb_push", "nginx_lb_initial", "nginx_lb_sets"].map((m) => ({
        path: `lua/${m}.lua`,
        content: o.luaSource?.[m] ?? "",
        mode: 0o600,
      })),
    ];
    const t = await checkConfig({ conf, files, generation: "" }, dir);
    expect(t.ok, t.output).toBe(true);
  });
});
