import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServices } from "../../src/model/services.js";
import { renderNginxConf } from "../../src/render/index.js";
import { inspectTls, nodeTlsInspector } from "../../src/tls/inspect.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

let good: Pem;
let other: Pem;
let weak: Pem;
let expired: Pem;
let future: Pem;

beforeAll(async () => {
  const dir = await tempDir("nginx-lb-certs-");
  const ca = await makeCa(dir);
  [good, other, weak, expired, future] = await Promise.all([
    makeLeaf(ca, dir, { names: ["a.test", "*.a.test"] }),
    makeLeaf(ca, dir, { names: ["a.test"] }),
    makeLeaf(ca, dir, { names: ["weak.test"], rsaBits: 1024 }),
    makeLeaf(ca, dir, { names: ["old.test"], notBefore: "20200101000000Z", notAfter: "20210102030405Z" }),
    makeLeaf(ca, dir, { names: ["new.test"], notBefore: "20991231000000Z", notAfter: "21000101000000Z" }),
  ]);
});

afterAll(cleanupNginx);

describe("inspectTls", () => {
  it("accepts a matching, current, strong pair that names the domain", () => {
    expect(inspectTls(good.cert, good.key, "a.test")).toEqual({ errors: [], warnings: [] });
    expect(inspectTls(good.cert, good.key, "x.a.test").warnings).toEqual([]);
    expect(inspectTls(good.cert, good.key, "*.a.test").warnings).toEqual([]);
  });

  it("a key that is not the certificate's is an error on ssl_certificate_key", () => {
    const r = inspectTls(good.cert, other.key, "a.test");
    expect(r.errors).toEqual([{ field: "ssl_certificate_key", message: expect.stringMatching(/does not match/) }]);
  });

  it("a 1024-bit RSA key is an error saying what OpenSSL needs", () => {
    const r = inspectTls(weak.cert, weak.key, "weak.test");
    expect(r.errors.map((e) => e.field)).toContain("ssl_certificate_key");
    expect(r.errors.map((e) => e.message).join("\n")).toMatch(/1024-bit RSA.*2048/);
  });

  it("an expired certificate is a warning naming both dates, not an error", () => {
    const r = inspectTls(expired.cert, expired.key, "old.test");
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([
      {
        field: "ssl_certificate",
        message: expect.stringMatching(/expired on 2021-01-02T03:04:05\.000Z \(valid from 2020-01-01T00:00:00\.000Z\)/),
      },
    ]);
  });

  it("a certificate not valid yet is a warning naming its dates", () => {
    const r = inspectTls(future.cert, future.key, "new.test");
    expect(r.errors).toEqual([]);
    expect(r.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/not valid yet: valid from 2099-12-31/)]);
  });

  it("a certificate for another name is a warning", () => {
    expect(inspectTls(good.cert, good.key, "b.test").warnings.map((w) => w.message)).toEqual([
      expect.stringMatching(/does not name b\.test/),
    ]);
  });

  it("unreadable PEM text is an error on each field", () => {
    const junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
    expect(inspectTls(junk, junk, "a.test").errors.map((e) => e.field)).toEqual([
      "ssl_certificate",
      "ssl_certificate_key",
    ]);
  });
});

describe("certificate checks in parseServices", () => {
  const doc = (pem: Pem, domain: string, port: number) => ({
    servers: [
      {
        domain_name: domain,
        ssl_port: port,
        ssl_certificate: pem.cert,
        ssl_certificate_key: pem.key,
        routes: { "/": { app: "a", service: "b" } },
      },
    ],
  });

  it("names the field of a too-small key, so it never reaches nginx -t", () => {
    const r = parseServices(doc(weak, "weak.test", 8443), { inspectTls: nodeTlsInspector });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map((e) => e.path)).toContain("servers[0].ssl_certificate_key");
  });

  it("which matters: nginx -t itself refuses that key ('ee key too small')", async () => {
    const r = parseServices(doc(weak, "weak.test", 8443));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const dir = await tempDir();
    const t = await checkConfig(renderNginxConf({ services: r.value, backends: {} }, { dir }), dir);
    expect(t.ok).toBe(false);
    expect(t.output).toMatch(/key too small/);
  });

  it("an expired certificate validates with a warning and nginx -t accepts it", async () => {
    const r = parseServices(doc(expired, "old.test", 8443), { inspectTls: nodeTlsInspector });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.warnings).toEqual([expect.objectContaining({ path: "servers[0].ssl_certificate", code: "tls_warning" })]);
    const dir = await tempDir();
    const t = await checkConfig(renderNginxConf({ services: r.value, backends: {} }, { dir }), dir);
    expect(t.ok, t.output).toBe(true);
  });
});
