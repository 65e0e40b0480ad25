import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { backendSetFromKeys, parseBackendsFile } from "./backends.js";
import { formatProblem } from "./problem.js";
import { parseServices } from "./services.js";
import { closest } from "./suggest.js";
import { nodeTlsInspector } from "../tls/inspect.js";

/** Problems of a services.json text, parsed as the CLI parses it (JSON.parse, so `__proto__` is an own key). */
const problems = (json: string) => {
  const r = parseServices(JSON.parse(json), { inspectTls: nodeTlsInspector });
  return { errors: r.ok ? [] : r.errors.map(formatProblem), warnings: r.warnings.map(formatProblem) };
};
const server = (fields: string) => `{"servers":[{"domain_name":"a.example.com",${fields}}]}`;
const route = '{"app":"a","service":"b"}';

describe("services.json input errors", () => {
  it("a route key __proto__ is an error naming it, not a route that silently vanishes", () =>
    expect(problems(server(`"routes":{"__proto__":${route},"/x":${route}}`)).errors).toEqual([
      expect.stringMatching(
        /^servers\[0\]\.routes\.__proto__: route key must be an absolute URL path.*got "__proto__"$/,
      ),
    ]));

  it.each([
    ['"fronted_port":8080', "servers[0].fronted_port", "frontend_port"],
    ['"Frontend-Port":8080', 'servers[0]["Frontend-Port"]', "frontend_port"],
    ['"ssl_prot":8443', "servers[0].ssl_prot", "ssl_port"],
    ['"route":{}', "servers[0].route", "routes"],
    ['"domain":"x"', "servers[0].domain", null],
    [
      `"routes":{"/":{"app":"a","service":"b","backend_pth":"/"}}`,
      'servers[0].routes["/"].backend_pth',
      "backend_path",
    ],
    [`"routes":{"/":{"app":"a","service":"b","prot":80}}`, 'servers[0].routes["/"].prot', "port"],
    [
      `"routes":{"/":{"app":"a","service":"b","backup":{"app":"c","sevrice":"d","service":"d"}}}`,
      'servers[0].routes["/"].backup.sevrice',
      null,
    ],
    ['"colour":"red"', "servers[0].colour", null],
  ])("%s: warning at %s suggests %s", (fields, path, guess) =>
    expect(problems(server(fields)).warnings).toContain(
      `${path}: unknown field, ignored${guess ? `: did you mean \`${guess}\`?` : " (check its spelling)"}`,
    ),
  );

  it("a misspelled top-level field gets a suggestion too", () =>
    expect(problems('{"server":[],"servers":[],"verison":"0.1"}').warnings).toEqual([
      "server: unknown field, ignored (check its spelling)",
      "verison: unknown field, ignored: did you mean `version`?",
      expect.stringMatching(/^servers: is empty/),
    ]));

  it.each([
    ["PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY)", "pkcs8"],
    ["traditional (Proc-Type: 4,ENCRYPTED)", "sec1"],
  ] as const)("an encrypted %s key gets its own message, never quoting the key", (_, type) => {
    const { privateKey } = generateKeyPairSync("ec", {
      namedCurve: "P-256",
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type, format: "pem", cipher: "aes-256-cbc", passphrase: "secret" },
    });
    const cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    const r = problems(
      server(`"ssl_certificate":${JSON.stringify(cert)},"ssl_certificate_key":${JSON.stringify(privateKey)}`),
    );
    expect(r.errors).toEqual([
      "servers[0].ssl_certificate_key: the key is encrypted: nginx-lb needs an unencrypted key; decrypt it with `openssl pkey -in key.pem -out plain.pem`",
    ]);
    const body = privateKey.split("\n").reduce((a, b) => (b.length > a.length ? b : a));
    expect(body.length).toBeGreaterThan(40);
    expect(JSON.stringify(r)).not.toContain(body);
  });

  it("the TLS check alone says the same of an encrypted key", () => {
    const { privateKey } = generateKeyPairSync("ec", {
      namedCurve: "P-256",
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "secret" },
    });
    expect(nodeTlsInspector("", privateKey, "a.example.com").errors).toContainEqual({
      field: "ssl_certificate_key",
      message: expect.stringMatching(/^the key is encrypted: /),
    });
  });

  it("an empty server list warns that nothing listens (not that it answers 404)", () =>
    expect(problems('{"servers":[]}')).toEqual({
      errors: [],
      warnings: [
        "servers: is empty: nginx listens on no frontend port, so clients are refused until a server is added",
      ],
    }));
});

describe("backend names that are Object.prototype members", () => {
  it("a backends-file name __proto__ is an error naming it (JSON.parse makes it an own key)", () => {
    const r = parseBackendsFile(JSON.parse('{"__proto__":{"10.0.0.1":{"weight":1}},"a-b":{"10.0.0.2":{}}}'));
    expect(r.ok ? [] : r.errors.map(formatProblem)).toEqual([
      '["__proto__"]["10.0.0.1"]: backend name "__proto__" is reserved: routes name backends <app>-<service>',
    ]);
    expect(Object.prototype).not.toHaveProperty("10.0.0.1");
  });

  it("a registry key under constructor or __proto__ neither pollutes Object nor is lost", () => {
    const { set, warnings } = backendSetFromKeys([
      ["/lb/backends/constructor/ips/10.0.0.1", '{"weight":3}'],
      ["/lb/backends/__proto__/ips/10.0.0.2", '{"weight":4}'],
    ]);
    expect(JSON.stringify(set)).toBe('{"constructor":{"10.0.0.1":{"weight":3}}}');
    expect(warnings.map((w) => w.path)).toEqual(["/lb/backends/__proto__/ips/10.0.0.2"]);
    expect(Object).not.toHaveProperty("10.0.0.1");
    expect(Object.prototype).not.toHaveProperty("10.0.0.2");
  });
});

describe("closest", () => {
  it("gives up quickly on a very long word", () => expect(closest("x".repeat(100_000), ["routes"])).toBeUndefined());

  it.each([
    ["fronted_port", "frontend_port"],
    ["domian_name", "domain_name"],
    ["DomainName", "domain_name"],
    ["domain", "domain_name"],
    ["ssl_cert", "ssl_certificate"],
    ["port", "frontend_port"],
    ["xyz", undefined],
  ])("%s -> %s", (word, guess) =>
    expect(
      closest(word, ["domain_name", "frontend_port", "ssl_certificate", "ssl_certificate_key", "ssl_port", "routes"]),
    ).toBe(guess),
  );
});
