import { describe, expect, test } from "vitest";
import { hideKeys, restoreKey, restoreKeys, STORED_KEY } from "./stored-key.js";

const KEY = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----";
const server = (domain: string, port?: number) => ({
  domain_name: domain,
  ...(port !== undefined ? { frontend_port: port } : {}),
  ssl_certificate: "cert",
  ssl_certificate_key: KEY,
  routes: {},
});

describe("stored keys", () => {
  test("hideKeys replaces each key in place and leaves servers without one as they are", () => {
    const plain = { domain_name: "p.test", routes: {} };
    const hidden = hideKeys([server("a.test", 80), plain]);
    expect(hidden).toEqual([{ ...server("a.test", 80), ssl_certificate_key: STORED_KEY }, plain]);
    expect(Object.keys(hidden[0] ?? {})).toEqual(Object.keys(server("a.test", 80)));
    expect(JSON.stringify(hidden)).not.toContain("PRIVATE KEY");
  });

  test("restoreKeys puts back the key stored for the same domain:port (default port 80, any case): the same JSON", () => {
    const stored = new Map([["/p/a.test:80", JSON.stringify(server("a.test"))]]);
    const doc = { version: "0.1", servers: hideKeys([server("A.test")]) };
    const r = restoreKeys("/p", doc, stored);
    expect(r.problems).toEqual([]);
    expect(JSON.stringify(r.doc)).toBe(JSON.stringify({ version: "0.1", servers: [server("A.test")] }));
    // The input is not changed.
    expect(doc.servers[0]?.ssl_certificate_key).toBe(STORED_KEY);
  });

  test("a placeholder with no stored key (another port, none stored, a stored placeholder) is a problem at its path", () => {
    const stored = new Map([
      ["/p/a.test:80", JSON.stringify({ domain_name: "a.test" })],
      ["/p/b.test:80", JSON.stringify({ ...server("b.test"), ssl_certificate_key: STORED_KEY })],
      ["/p/c.test:80", JSON.stringify(server("c.test"))],
    ]);
    const servers = hideKeys([server("a.test"), server("b.test"), server("c.test", 81), server("c.test")]);
    const r = restoreKeys("/p", { servers }, stored);
    expect(r.problems.map((p) => p.path)).toEqual([
      "servers[0].ssl_certificate_key",
      "servers[1].ssl_certificate_key",
      "servers[2].ssl_certificate_key",
    ]);
    expect(r.problems[2]?.message).toMatch(/etcd holds no key for c\.test:81: send the key's PEM text/);
    expect(restoreKey("/p", servers[0], stored, "").problem?.path).toBe("ssl_certificate_key");
  });

  test("anything but the placeholder passes as it is", () => {
    expect(restoreKeys("/p", "x", new Map())).toEqual({ doc: "x", problems: [] });
    expect(restoreKey("/p", server("a.test"), new Map(), "").server).toEqual(server("a.test"));
  });
});
