import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseServices } from "./services.js";
import { servicesSchema, strictServicesSchema } from "./schema.js";

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

describe("health_check", () => {
  const parse = (block: unknown, where: "route" | "backup" = "route") =>
    parseServices({
      servers: [
        {
          domain_name: "a.example.com",
          routes: {
            "/": {
              app: "a",
              service: "b",
              ...(where === "route"
                ? { health_check: block }
                : { backup: { app: "c", service: "d", health_check: block } }),
            },
          },
        },
      ],
    });
  const check = (block: unknown) => {
    const r = parse(block);
    return r.ok ? r.value.servers[0]?.routes[0]?.primary.healthCheck : r.errors.map((e) => `${e.path}: ${e.message}`);
  };
  const at = 'servers[0].routes["/"].health_check';

  it("without the block, no check", () => expect(parse(undefined).ok && check(undefined)).toBeUndefined());
  it("an empty block takes every default", () =>
    expect(check({})).toEqual({
      type: "http",
      path: "/healthz",
      intervalMs: 2000,
      timeoutMs: 1000,
      healthy: 2,
      unhealthy: 3,
      expect: [[200, 399]],
      key: "http /healthz 200-399 2000ms 1000ms 2/3",
    }));
  it.each([
    [{ type: "tcp", path: "/x" }, "tcp 2000ms 1000ms 2/3"],
    [{ interval: "500ms", timeout: "200ms" }, "http /healthz 200-399 500ms 200ms 2/3"],
    [{ interval: "1m", timeout: "1m" }, "http /healthz 200-399 60000ms 60000ms 2/3"],
    [{ interval: "500ms" }, "http /healthz 200-399 500ms 500ms 2/3"],
    [{ expect: "200,204,300-302" }, "http /healthz 200-200,204-204,300-302 2000ms 1000ms 2/3"],
    [
      { path: "/status?full=1&x=a/b", healthy: 1, unhealthy: 100 },
      "http /status?full=1&x=a/b 200-399 2000ms 1000ms 1/100",
    ],
  ])("accepts %j", (block, key) => expect((check(block) as { key: string }).key).toBe(key));
  it.each([
    [{ type: "udp" }, `${at}.type: type must be "http" or "tcp", got "udp"`],
    [{ path: "healthz" }, `${at}.path: path must be an absolute URL path`],
    [{ path: "/a b" }, `${at}.path: path must be`],
    [{ path: "/a\r\nHost: x" }, `${at}.path: path must be`],
    [{ path: "/%2e" }, `${at}.path: path must be`],
    [{ path: "/a/../b" }, `${at}.path: path must be`],
    [
      { interval: "2" },
      `${at}.interval: interval must be a duration like "500ms", "2s" or "1m" from 100ms to 10m, got "2"`,
    ],
    [{ interval: "50ms" }, `${at}.interval: interval must be a duration`],
    [{ interval: "11m" }, `${at}.interval: interval must be a duration`],
    [{ interval: 2 }, `${at}.interval: interval must be a duration`],
    [{ timeout: "0s" }, `${at}.timeout: timeout must be a duration`],
    [{ timeout: "3s" }, `${at}.timeout: 3s is longer than interval 2s`],
    [{ healthy: 0 }, `${at}.healthy: healthy must be an integer from 1 to 100, got 0`],
    [{ unhealthy: 1.5 }, `${at}.unhealthy: unhealthy must be an integer from 1 to 100`],
    [{ expect: "399-200" }, `${at}.expect: expect must be HTTP status codes or ranges`],
    [{ expect: "2xx" }, `${at}.expect: expect must be`],
    [{ expect: "600" }, `${at}.expect: expect must be`],
    ["on", `${at}: `],
  ])("refuses %j", (block, message) => expect((check(block) as string[])[0]).toContain(message));
  it("a backup has its own block, with its own path", () => {
    const r = parse({ timeout: "5s" }, "backup");
    expect(!r.ok && r.errors.map((e) => e.path)).toEqual(['servers[0].routes["/"].backup.health_check.timeout']);
    const ok = parse({ type: "tcp" }, "backup");
    expect(ok.ok && ok.value.servers[0]?.routes[0]?.backup?.healthCheck?.key).toBe("tcp 2000ms 1000ms 2/3");
  });
  it("an unknown field in the block is a warning that names the likely one", () => {
    const r = parse({ intervall: "1s" });
    expect(r.warnings.map((w) => `${w.path}: ${w.message}`)).toEqual([
      `${at}.intervall: unknown field, ignored: did you mean \`interval\`?`,
    ]);
  });
});

describe("the strict schema's value", () => {
  // parseServices takes the value from the strict pass when it has no unknown field: it must be the lenient one's.
  const check = fc.record(
    {
      type: fc.constantFrom("http", "tcp"),
      path: fc.constantFrom("/h", "/healthz"),
      interval: fc.constantFrom("1s", "500ms"),
      timeout: fc.constantFrom("100ms", "200ms"),
      healthy: fc.integer({ min: 1, max: 5 }),
      expect: fc.constantFrom("200", "200-299,302"),
    },
    { requiredKeys: [] },
  );
  const ref = { app: fc.constantFrom("a", "b"), service: fc.constant("s"), port: fc.integer({ min: 1, max: 65535 }) };
  const route = fc.record(
    {
      ...ref,
      backend_path: fc.constantFrom("/", "/x/"),
      backup: fc.record({ ...ref, health_check: check }, { requiredKeys: ["app", "service"] }),
      health_check: check,
    },
    { requiredKeys: ["app", "service"] },
  );
  const server = fc.record(
    {
      domain_name: fc.constantFrom("a.test", "*.b.test", "C.test"),
      frontend_port: fc.constantFrom(80, 8080),
      routes: fc.dictionary(fc.constantFrom("/", "/p", "/q/"), route, { maxKeys: 3 }),
    },
    { requiredKeys: ["domain_name"] },
  );
  it("equals the lenient schema's for any file without unknown fields", () => {
    fc.assert(
      fc.property(
        fc.record(
          { version: fc.constant("0.1"), servers: fc.array(server, { maxLength: 3 }) },
          { requiredKeys: ["servers"] },
        ),
        (raw) => {
          const strict = strictServicesSchema.safeParse(raw);
          const lenient = servicesSchema.safeParse(raw);
          expect(strict.success).toBe(lenient.success);
          if (strict.success && lenient.success) expect(strict.data).toEqual(lenient.data);
        },
      ),
      { numRuns: 200 },
    );
  });
});
