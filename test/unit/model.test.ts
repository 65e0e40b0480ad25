import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { backendSetFromKeys, parseBackendsFile, parseEndpointKey, parseWeight } from "../../src/model/backends.js";
import { isDomain, isName, isUrlPath, normalizePrefix } from "../../src/model/grammar.js";
import { canonicalIp, ipFamily } from "../../src/model/ip.js";
import { parseServices } from "../../src/model/services.js";

describe("ip", () => {
  it.each([
    ["10.0.0.1", 4],
    ["0.0.0.0", 4],
    ["255.255.255.255", 4],
    ["::", 6],
    ["::1", 6],
    ["2001:db8::1", 6],
    ["2001:DB8:0:0:0:0:0:1", 6],
    ["1:2:3:4:5:6:7::", 6],
    ["::ffff:10.0.0.1", 6],
    ["1:2:3:4:5:6:1.2.3.4", 6],
  ])("%s is IPv%s", (text, family) => expect(ipFamily(text)).toBe(family));

  it.each([
    "256.0.0.1",
    "1.2.3",
    "1.2.3.4.5",
    "01.2.3.4",
    " 1.2.3.4",
    "1.2.3.4:80",
    "",
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    "12345::",
    "::1%eth0",
    "[::1]",
    ":1",
    "1:",
    "1.2.3.4::",
    "1:2:3:4:5:6:7:1.2.3.4",
    "1::2:3:4:5:6:7:8",
    "localhost",
  ])("%j is not an address", (text) => expect(ipFamily(text)).toBeNull());

  it("agrees with node's parser on generated near-addresses", () => {
    const token = fc.constantFrom("0", "1", "ff", "ffff", "12345", "1.2.3.4", "01.2.3.4", "::", ":", ".", "256");
    fc.assert(
      fc.property(fc.array(token, { maxLength: 10 }), (parts) => {
        const s = parts.join("");
        expect(ipFamily(s) ?? 0, s).toBe(isIP(s));
      }),
      { numRuns: 3000 },
    );
  });
});

describe("canonicalIp", () => {
  it.each([
    ["10.0.0.1", "10.0.0.1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:0db8::0001", "2001:db8::1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"],
    ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4"],
    ["::FFFF:10.1.2.3", "::ffff:10.1.2.3"],
    ["0:0:0:0:0:ffff:a01:203", "::ffff:10.1.2.3"],
    ["::1.2.3.4", "::102:304"],
  ])("%s is written %s", (text, canonical) => expect(canonicalIp(text)).toBe(canonical));

  it("is null for what is not an address", () => expect(canonicalIp("1.2.3.4:80")).toBeNull());

  it("agrees with the WHATWG URL parser on generated IPv6 addresses (IPv4-mapped aside)", () => {
    const group = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), fc.boolean(), (groups, pad) => {
        const text = groups.map((g) => (pad ? g.toString(16).padStart(4, "0") : g.toString(16))).join(":");
        const url = new URL(`http://[${text}]/`).hostname.slice(1, -1);
        if (!url.startsWith("::ffff:")) expect(canonicalIp(text)).toBe(url);
        expect(canonicalIp(canonicalIp(text) ?? "")).toBe(canonicalIp(text));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("grammar", () => {
  it("accepts host names and one leading wildcard, up to 63-character labels", () => {
    for (const d of ["a", "a.b", "xn--bcher-kva.example", "*.example.com", "a-b.c1", `${"a".repeat(63)}.com`])
      expect(isDomain(d), d).toBe(true);
    for (const d of [
      "",
      "-a.com",
      "a-.com",
      "a..b",
      "*.",
      "a.*.com",
      "*a.com",
      "a_b.com",
      `${"a".repeat(64)}.com`,
      "a.com.",
    ])
      expect(isDomain(d), d).toBe(false);
  });

  it("accepts absolute URL paths of safe characters, without dot segments", () => {
    for (const p of ["/", "/a", "/a/", "/a/b", "/v1.2", "/~u", "/a:b@c=d,e+f!g*h"]) expect(isUrlPath(p), p).toBe(true);
    for (const p of ["", "a", "//", "/a//b", "/.", "/a/..", "/a/./b", "/a?b", "/a%20", "/a b", "/a;b", "/a$", "/a'"])
      expect(isUrlPath(p), p).toBe(false);
  });

  it("names are letters, digits, . _ -", () => {
    expect(isName("my_app.v2-x")).toBe(true);
    for (const n of ["", "a b", "a/b", "a:b", "é"]) expect(isName(n), n).toBe(false);
  });

  it("normalises a trailing slash away except for the root", () => {
    expect(normalizePrefix("/api/")).toBe("/api");
    expect(normalizePrefix("/api")).toBe("/api");
    expect(normalizePrefix("/")).toBe("/");
  });
});

describe("registry keys and weights", () => {
  it("reads a key into name, ip and weight", () => {
    expect(parseEndpointKey("/lb/backends/demo-app/ips/192.168.58.57", '{"weight":50}')).toEqual({
      kind: "endpoint",
      name: "demo-app",
      ip: "192.168.58.57",
      endpoint: { weight: 50 },
    });
  });

  it("writes IPv6 canonically, so two spellings of one address are one endpoint, not twice its weight", () => {
    const r = parseEndpointKey("/lb/backends/a-b/ips/2001:DB8::A", "{}");
    expect(r).toMatchObject({ kind: "endpoint", ip: "2001:db8::a" });
    const { set } = backendSetFromKeys([
      ["/lb/backends/a-b/ips/2001:db8::1", '{"weight":5}'],
      ["/lb/backends/a-b/ips/2001:0DB8:0:0:0:0:0:1", '{"weight":7}'],
    ]);
    expect(set).toEqual({ "a-b": { "2001:db8::1": { weight: 7 } } });
  });

  it("honours another prefix, with or without its trailing slash", () => {
    expect(parseEndpointKey("/x/a-b/ips/10.0.0.1", "{}", "/x/").kind).toBe("endpoint");
    expect(parseEndpointKey("/x/a-b/ips/10.0.0.1", "{}", "/x").kind).toBe("endpoint");
    expect(parseEndpointKey("/lb/backends/a-b/ips/10.0.0.1", "{}", "/x").kind).toBe("rejected");
  });

  it.each([
    "/lb/backends/a-b/ips",
    "/lb/backends/a-b/ip/10.0.0.1",
    "/lb/backends/a-b/ips/",
    "/lb/backends//ips/10.0.0.1",
    "/lb/backendsX/a-b/ips/10.0.0.1",
  ])("rejects the malformed key %j with a reason", (key) => {
    const r = parseEndpointKey(key, "{}");
    expect(r.kind).toBe("rejected");
    if (r.kind === "rejected") expect(r.reason.length).toBeGreaterThan(10);
  });

  it.each([
    ['{"weight":50}', 50, false],
    ['{"weight":0}', 0, false],
    ['{"weight":1000}', 1000, false],
    ['{"weight":1001}', 1, true],
    ['{"weight":-1}', 1, true],
    ['{"weight":2.5}', 1, true],
    ['{"weight":"50"}', 1, true],
    ["{}", 1, true],
    ["[]", 1, true],
    ["null", 1, true],
    ["not json", 1, true],
    ["", 1, true],
  ] as const)("weight of %j is %i (warning: %s)", (value, weight, warns) => {
    const r = parseWeight(value);
    expect(r.weight).toBe(weight);
    expect(r.warning !== undefined).toBe(warns);
  });

  it("a key is an endpoint exactly when it splits into <prefix><name>/ips/<ip>", () => {
    const base = "/lb/backends/";
    const segment = fc.constantFrom("", "ips", "a-b", "10.0.0.1", "::1", "ips/", "/", "x");
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 6 }), fc.boolean(), (segments, inside) => {
        const key = (inside ? base : "/lb/other/") + segments.join("/");
        const parts = key.slice(base.length).split("/");
        const r = parseEndpointKey(key, '{"weight":3}');
        const splits = key.startsWith(base) && parts.length === 3 && parts[1] === "ips";
        if (!splits) expect(r.kind).toBe("rejected");
        else if (r.kind === "endpoint") expect([r.name, r.ip]).toEqual([parts[0], parts[2]]);
        else expect(r.reason).not.toMatch(/is not of the form/);
      }),
      { numRuns: 3000 },
    );
  });

  it("a plain weight value reads as JSON.parse reads it (the shortcut for registrars' spelling)", () => {
    // The reference: the value through JSON.parse, as every value not spelled exactly {"weight":N} is read.
    // (Its warnings quote the value, so only the weight and whether there is a warning are compared.)
    const read = (value: string) => {
      const r = parseWeight(value);
      return { weight: r.weight, warns: r.warning !== undefined };
    };
    const viaJson = (value: string) => read(value.replace("{", "{ "));
    const spelled = fc.oneof(
      fc.integer({ min: -5, max: 12_000 }).map(String),
      fc.stringMatching(/^-?0[0-9]{1,4}$/),
      fc.constantFrom("1e2", "1.0", "10.5", "", " 7", "7 "),
    );
    fc.assert(
      fc.property(spelled, (n) => {
        const value = `{"weight":${n}}`;
        expect(read(value)).toEqual(viaJson(value));
      }),
      { numRuns: 2000 },
    );
    for (let n = 0; n <= 1001; n++) expect(read(`{"weight":${n}}`)).toEqual(viaJson(`{"weight":${n}}`));
  });

  it("IPv4 addresses as node:net reads them (every dotted text of up to 4 parts of 0-3 digits)", () => {
    const part = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.stringMatching(/^[0-9]{0,3}$/));
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), (parts) => {
        const text = parts.join(".");
        expect(ipFamily(text) === 4).toBe(isIP(text) === 4);
      }),
      { numRuns: 5000 },
    );
  });

  it("builds a sorted set; the last value of a key wins; rejected keys are warnings", () => {
    const { set, warnings } = backendSetFromKeys([
      ["/lb/backends/b-x/ips/10.0.0.2", '{"weight":2}'],
      ["/lb/backends/a-x/ips/10.0.0.9", '{"weight":1}'],
      ["/lb/backends/a-x/ips/10.0.0.1", '{"weight":1}'],
      ["/lb/backends/b-x/ips/10.0.0.2", '{"weight":7}'],
      ["/lb/backends/b-x/ips/nope", '{"weight":7}'],
    ]);
    expect(JSON.stringify(set)).toBe(
      '{"a-x":{"10.0.0.1":{"weight":1},"10.0.0.9":{"weight":1}},"b-x":{"10.0.0.2":{"weight":7}}}',
    );
    expect(warnings).toEqual([
      expect.objectContaining({ code: "registry_key_rejected", path: "/lb/backends/b-x/ips/nope" }),
    ]);
  });

  it("the backends file: odd weights are warnings with JSON paths, a non-object is an error", () => {
    const r = parseBackendsFile({ "a-b": { "10.0.0.1": { weight: "x" }, "10.0.0.2": {} } });
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.path)).toEqual(['["a-b"]["10.0.0.1"]', '["a-b"]["10.0.0.2"]']);
    const bad = parseBackendsFile({ "a-b": ["10.0.0.1"] });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.errors.map((e) => e.path)).toEqual(['["a-b"]']);
    expect(parseBackendsFile([]).ok).toBe(false);
  });
});

describe("services cross-checks", () => {
  const site = (extra: Record<string, unknown>) => ({ domain_name: "a.example.com", routes: {}, ...extra });
  const errorsOf = (doc: unknown) => {
    const r = parseServices(doc);
    return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
  };

  it("the same domain twice on one port is an error at the second, case-insensitively", () => {
    const errs = errorsOf({ servers: [site({}), site({ domain_name: "A.Example.com" })] });
    expect(errs).toEqual([
      expect.stringMatching(/^servers\[1\]\.domain_name: domain a\.example\.com on port 80 .*servers\[0\]/),
    ]);
  });

  it("the same domain on two ports is fine", () => {
    expect(errorsOf({ servers: [site({}), site({ frontend_port: 8080 })] })).toEqual([]);
  });

  it("one port for plain HTTP and TLS is an error naming both places", () => {
    const tls = { ssl_certificate: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----" };
    const key = { ssl_certificate_key: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----" };
    const errs = errorsOf({
      servers: [site({ ...tls, ...key, ssl_port: 8443 }), site({ domain_name: "b.example.com", frontend_port: 8443 })],
    });
    expect(errs).toEqual([expect.stringMatching(/^servers\[1\]\.frontend_port: port 8443 .*servers\[0\]\.ssl_port/)]);
    expect(errorsOf({ servers: [site({ ...tls, ...key, ssl_port: 80 })] })).toEqual([
      expect.stringMatching(/^servers\[0\]\.ssl_port: ssl_port 80 equals frontend_port/),
    ]);
  });

  it("two route keys that are one prefix after normalisation are an error", () => {
    const r = { app: "a", service: "b" };
    expect(errorsOf({ servers: [site({ routes: { "/api": r, "/api/": r } })] })).toEqual([
      expect.stringMatching(/^servers\[0\]\.routes\["\/api\/"\]: is the same prefix as "\/api"/),
    ]);
  });

  it("a backup backend_path that differs from the route's is an error; an equal one is fine", () => {
    const route = (bp: string) => ({
      app: "a",
      service: "b",
      backend_path: "/v2",
      backup: { app: "c", service: "d", backend_path: bp },
    });
    expect(errorsOf({ servers: [site({ routes: { "/": route("/v3") } })] })).toEqual([
      expect.stringMatching(
        /^servers\[0\]\.routes\["\/"\]\.backup\.backend_path: must equal the route's backend_path "\/v2"/,
      ),
    ]);
    expect(errorsOf({ servers: [site({ routes: { "/": route("/v2") } })] })).toEqual([]);
  });

  it("a certificate needs its key and a key its certificate", () => {
    const cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----";
    expect(errorsOf({ servers: [site({ ssl_certificate: cert })] })).toEqual([
      expect.stringMatching(/^servers\[0\]\.ssl_certificate_key: is required when ssl_certificate is given/),
    ]);
    expect(errorsOf({ servers: [site({ ssl_certificate_key: cert.replace(/CERTIFICATE/g, "PRIVATE KEY") })] })).toEqual(
      [expect.stringMatching(/^servers\[0\]\.ssl_certificate: is required when ssl_certificate_key is given/)],
    );
  });

  it("reports errors of several servers at once", () => {
    const errs = errorsOf({ servers: [site({ frontend_port: 0 }), site({ domain_name: "b..c", routes: { x: {} } })] });
    expect(errs.map((e) => e.split(": ")[0])).toEqual([
      "servers[0].frontend_port",
      "servers[1].domain_name",
      "servers[1].routes.x",
    ]);
  });

  it("an empty or missing document is one clear error", () => {
    expect(errorsOf(null)).toEqual(['(file): services file must be a JSON object with a "servers" list']);
    expect(errorsOf({})).toEqual([expect.stringMatching(/^servers: servers is required/)]);
  });
});
