import { describe, expect, it } from "vitest";
import { parseServices } from "./services.js";

describe("parseServices", () => {
  it("applies the documented defaults", () => {
    const r = parseServices({
      servers: [{ domain_name: "a.example.com", routes: { "/api/": { app: "a", service: "b" } } }],
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.servers[0]).toEqual({
      domain: "a.example.com",
      port: 80,
      routes: [{ prefix: "/api", primary: { app: "a", service: "b", port: 80 }, backendPath: "/" }],
    });
  });

  it("reports every error of a file at once, each with its JSON path", () => {
    const r = parseServices({
      servers: [{ domain_name: "a b", routes: { "/api": { app: "x", service: "y", port: "80a" } } }],
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      expect.stringMatching(/^servers\[0\]\.domain_name: domain_name must be a host name.*got "a b"$/),
      'servers[0].routes["/api"].port: port must be an integer from 1 to 65535, got "80a"',
    ]);
  });

  it("warns about unknown fields instead of failing", () => {
    const r = parseServices({ servers: [{ domain_name: "a.example.com", colour: "red" }] });
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.path)).toEqual(["servers[0].colour"]);
  });

  it("never quotes key material in an error, even a malformed key's", () => {
    const secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
    const r = parseServices({
      servers: [
        {
          domain_name: "a.example.com",
          ssl_certificate: "x",
          ssl_certificate_key: `-----BEGIN PRIVATE KEY-----\n${secret}`,
        },
      ],
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.path)).toContain("servers[0].ssl_certificate_key");
    expect(JSON.stringify(r.errors)).not.toContain(secret.slice(0, 12));
  });
});
