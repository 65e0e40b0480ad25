import { describe, expect, it } from "vitest";
import { AdminConfigError, resolveAdminConfig, tokenMatches } from "../../src/admin/config.js";
import { safeJson } from "../../src/admin/view.js";

describe("admin settings", () => {
  it("listens on loopback without a token, and refuses any other address without one", () => {
    expect(resolveAdminConfig({ listen: "127.0.0.1:9180" })).toEqual({ host: "127.0.0.1", port: 9180 });
    expect(resolveAdminConfig({ listen: "[::1]:9180" })).toEqual({ host: "::1", port: 9180 });
    expect(resolveAdminConfig({ listen: ":9180" })).toEqual({ host: "127.0.0.1", port: 9180 });
    expect(() => resolveAdminConfig({ listen: "0.0.0.0:9180" })).toThrow(AdminConfigError);
    expect(() => resolveAdminConfig({ listen: "[::]:9180" })).toThrow(/NGINX_LB_ADMIN_TOKEN/);
    expect(() => resolveAdminConfig({ listen: "0.0.0.0:9180", token: "short" })).toThrow(/at least 16/);
    expect(resolveAdminConfig({ listen: "0.0.0.0:9180", token: "x".repeat(32) }).token).toBe("x".repeat(32));
    expect(() => resolveAdminConfig({ listen: "example.com:80" })).toThrow(AdminConfigError);
    expect(() => resolveAdminConfig({ listen: "127.0.0.1" })).toThrow(AdminConfigError);
  });

  it("matches only the exact token", () => {
    const t = "s3cret-token-0123456789";
    expect(tokenMatches(t, t)).toBe(true);
    expect(tokenMatches(`${t}x`, t)).toBe(false);
    expect(tokenMatches(t.slice(0, -1), t)).toBe(false);
    expect(tokenMatches("", t)).toBe(false);
    expect(tokenMatches(undefined, t)).toBe(false);
  });
});

describe("response bodies", () => {
  it("cut out anything shaped like a private key, even one quoted in an error message", () => {
    const key =
      "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    const out = safeJson({ error: `bad key ${key} here`, truncated: key.slice(0, 60), other: "kept" });
    expect(out).not.toContain("MIGHAgEAMBMGBy");
    expect(out).not.toContain("PRIVATE KEY");
    expect(JSON.parse(out)).toEqual({
      error: "bad key [private key redacted]\n here",
      truncated: "[private key redacted]",
      other: "kept",
    });
  });
});
