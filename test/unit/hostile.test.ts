import { describe, expect, it } from "vitest";
import { backendSetFromKeys, parseBackendsFile, parseEndpointKey } from "../../src/model/backends.js";
import { parseServices, type Services } from "../../src/model/services.js";
import { renderNginxConf } from "../../src/render/index.js";
import { LUA_MODULES } from "../../src/render/dynamic.js";
import { RenderBug } from "../../src/render/tokens.js";
import { nodeTlsInspector } from "../../src/tls/inspect.js";

// Injection attempts through every string that can reach nginx.conf. Each must be rejected with an error naming its
// JSON path (or registry key), and must appear in nothing nginx-lb renders.

type Doc = {
  servers: Record<string, unknown>[];
  [k: string]: unknown;
};

function base(): Doc {
  return {
    version: "0.1",
    servers: [
      {
        domain_name: "good.example.com",
        frontend_port: 80,
        routes: {
          "/": {
            app: "web",
            service: "front",
            port: 8080,
            backend_path: "/",
            backup: { app: "web", service: "spare" },
          },
        },
      },
    ],
  };
}

const OPTIONS = { dir: "/var/lib/nginx-lb", controlPort: 9901 };
const BACKENDS = { "web-front": { "10.0.0.1": { weight: 1 } }, "web-spare": { "10.0.0.2": { weight: 1 } } };

/** Everything nginx-lb would hand to nginx for this document: nginx.conf and its files, or nothing when invalid. */
function renderAll(doc: unknown): string {
  const r = parseServices(doc, { inspectTls: nodeTlsInspector });
  if (!r.ok) return "";
  const out = renderNginxConf({ services: r.value, backends: BACKENDS }, OPTIONS);
  return [out.conf, ...out.files.map((f) => `${f.path}\n${f.content}`)].join("\n");
}

const server = (d: Doc) =>
  d.servers[0] as Record<string, unknown> & { routes: Record<string, Record<string, unknown>> };
const route = (d: Doc) => server(d).routes["/"] as Record<string, unknown> & { backup: Record<string, unknown> };
const PEM_INJECTION = "-----BEGIN CERTIFICATE-----\n}\nserver { listen 1; }\n-----END CERTIFICATE-----";

interface Case {
  readonly what: string;
  readonly text: string;
  readonly path: string;
  readonly set: (d: Doc, text: string) => void;
}

const domain = (what: string, text: string): Case => ({
  what: `domain_name ${what}`,
  text,
  path: "servers[0].domain_name",
  set: (d, t) => (server(d).domain_name = t),
});
const routeKey = (what: string, text: string): Case => ({
  what: `route key ${what}`,
  text,
  path: `servers[0].routes[${JSON.stringify(text)}]`,
  set: (d, t) => (server(d).routes[t] = { app: "web", service: "front" }),
});
const field = (what: string, name: string, text: unknown, backup = false): Case => ({
  what: `${backup ? "backup." : ""}${name} ${what}`,
  text: String(text),
  path: `servers[0].routes["/"].${backup ? "backup." : ""}${name}`,
  set: (d) => ((backup ? route(d).backup : route(d))[name] = text),
});

const cases: Case[] = [
  domain("with a directive", "evil.com; include /etc/passwd"),
  domain("with a newline", "a.com\nserver_name b"),
  domain("closing the block", "a.com}"),
  domain("a variable", "$host"),
  domain("a comment", "a.com#x"),
  domain("a regex server_name", "~^(?<x>.+)$"),
  domain("with a Cyrillic lookalike", "ex\u0430mple.com"),
  domain("quoted", '"a.com"'),
  routeKey("with a directive", "/api; return 200"),
  routeKey("with braces", "/a{b}"),
  routeKey("with a variable", "/a$uri"),
  routeKey("with a comment", "/a#x"),
  routeKey("with a newline", "/a\nb"),
  routeKey("as a regex location", "~ ^/"),
  routeKey("with a space", "/a b"),
  routeKey("with a dot-dot segment", "/a/../b"),
  routeKey("with quotes", "/a'\""),
  routeKey("with a fullwidth semicolon", "/api\uff1b"),
  routeKey("with a percent escape", "/a%0d%0a"),
  field("with a semicolon", "app", "app;evil"),
  field("with a space", "app", "a b"),
  field("with a newline", "service", "svc\n"),
  field("with a variable", "service", "s$v"),
  field("as a string with a directive", "port", "80;"),
  field("as a string with a parameter", "port", "80 backup"),
  field("with a directive", "backend_path", "/v2;proxy_pass http://evil"),
  field("with a variable", "backend_path", "/$request_uri"),
  field("as a URL", "backend_path", "http://evil/"),
  field("closing a block", "app", "x}", true),
  field("with a semicolon", "service", "y;", true),
  field("as a string", "port", "81;", true),
  field("with a brace", "backend_path", "/x{", true),
  {
    what: "frontend_port with a parameter",
    text: "80 default_server",
    path: "servers[0].frontend_port",
    set: (d, t) => (server(d).frontend_port = t),
  },
  {
    what: "ssl_certificate carrying nginx syntax",
    text: "server { listen 1; }",
    path: "servers[0].ssl_certificate",
    set: (d) => Object.assign(server(d), { ssl_certificate: PEM_INJECTION, ssl_certificate_key: PEM_INJECTION }),
  },
  {
    what: "ssl_port as a string",
    text: "443;",
    path: "servers[0].ssl_port",
    set: (d, t) => (server(d).ssl_port = t),
  },
];

describe("hostile services.json fields", () => {
  it("the untouched document renders (so the checks below are not vacuous)", () => {
    expect(renderAll(base())).toContain("server_name good.example.com;");
  });

  it("has at least 25 cases", () => expect(cases.length).toBeGreaterThanOrEqual(25));

  it.each(cases.map((c) => [c.what, c] as const))("rejects %s", (_what, c) => {
    const doc = base();
    c.set(doc, c.text);
    const r = parseServices(doc, { inspectTls: nodeTlsInspector });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.path)).toContain(c.path);
    expect(renderAll(doc)).not.toContain(c.text);
  });

  it("an unknown field carrying nginx syntax is a warning and is never rendered", () => {
    const doc = base();
    const text = "}; server { listen 1; }";
    server(doc)["include"] = text;
    const r = parseServices(doc);
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.path)).toEqual(["servers[0].include"]);
    const out = renderAll(doc);
    expect(out).toContain("good.example.com");
    expect(out).not.toContain(text);
  });
});

describe("hostile registry keys and values", () => {
  const services = parseServices(base());
  if (!services.ok) throw new Error("base document must be valid");
  const render = (entries: [string, string][]) =>
    renderNginxConf({ services: services.value, backends: backendSetFromKeys(entries).set }, OPTIONS).conf;
  const good: [string, string] = ["/lb/backends/web-front/ips/10.0.0.1", '{"weight":1}'];

  const keys: [string, string][] = [
    ["an ip with a port", "/lb/backends/web-front/ips/1.2.3.4:80"],
    ["an ip with a semicolon", "/lb/backends/web-front/ips/1.2.3.4;"],
    ["a host name", "/lb/backends/web-front/ips/backend.local"],
    ["an ip with a parameter", "/lb/backends/web-front/ips/1.2.3.4 backup"],
    ["an IPv6 zone", "/lb/backends/web-front/ips/fe80::1%eth0"],
    ["a bracketed IPv6", "/lb/backends/web-front/ips/[::1]"],
    ["an ip with a leading zero", "/lb/backends/web-front/ips/010.0.0.1"],
    ["an ip with a newline", "/lb/backends/web-front/ips/1.2.3.4\nserver 6.6.6.6"],
    ["a name with a semicolon", "/lb/backends/web;x-front/ips/1.2.3.4"],
    ["a name with a brace", "/lb/backends/web}-front/ips/1.2.3.4"],
    ["an extra segment", "/lb/backends/web-front/ips/1.2.3.4/extra"],
    ["a unicode lookalike digit", "/lb/backends/web-front/ips/1.2.3.\uff14"],
  ];
  it.each(keys)("rejects a key with %s, naming the key, and renders nothing of it", (_what, key) => {
    expect(parseEndpointKey(key, '{"weight":1}').kind).toBe("rejected");
    const { set, warnings } = backendSetFromKeys([good, [key, '{"weight":1}']]);
    expect(warnings.map((w) => w.path)).toEqual([key]);
    expect(set).toEqual({ "web-front": { "10.0.0.1": { weight: 1 } } });
    const conf = render([good, [key, '{"weight":1}']]);
    expect(conf).toContain("10.0.0.1");
    const tail = key.slice("/lb/backends/web-front/ips/".length);
    expect(conf).not.toContain(tail.replace(/^.*\//, ""));
  });

  const values = ['{"weight":"50; down"}', '{"weight":"1 backup"}', "down;", '{"weight":1e9}', '{"weight":"$w"}'];
  it.each(values)("a value %j becomes weight 1 with a warning naming the key, and is not rendered", (value) => {
    const key = "/lb/backends/web-front/ips/10.0.0.3";
    const { set, warnings } = backendSetFromKeys([[key, value]]);
    expect(warnings.map((w) => w.path)).toEqual([key]);
    expect(set["web-front"]?.["10.0.0.3"]).toEqual({ weight: 1 });
    const conf = render([[key, value]]);
    expect(conf).toContain("server 10.0.0.3:8080 weight=1 ");
    for (const bit of ["50; down", "1 backup", "down;", "$w"]) expect(conf).not.toContain(bit);
  });

  it("the embedded backends file rejects the same addresses and names with their JSON paths", () => {
    const r = parseBackendsFile({
      "web-front": { "1.2.3.4:80": { weight: 1 }, "10.0.0.1;": { weight: 1 } },
      "web front": { "10.0.0.2": { weight: 1 } },
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.path).sort()).toEqual(
      ['["web front"]["10.0.0.2"]', '["web-front"]["1.2.3.4:80"]', '["web-front"]["10.0.0.1;"]'].sort(),
    );
  });
});

describe("the renderer's own guard", () => {
  // A model built without parseServices (a bug elsewhere) must make the renderer throw, never emit.
  const model = (domain: string, prefix: string, app: string): Services => ({
    servers: [{ domain, port: 80, routes: [{ prefix, primary: { app, service: "s", port: 80 }, backendPath: "/" }] }],
  });
  it.each([
    ["domain", model("a.com; evil", "/", "a")],
    ["route prefix", model("a.com", "/a;b", "a")],
    ["app", model("a.com", "/", "a}b")],
  ])("throws RenderBug for a hostile %s", (_what, services) => {
    expect(() => renderNginxConf({ services, backends: { "a-s": { "10.0.0.1": { weight: 1 } } } }, OPTIONS)).toThrow(
      RenderBug,
    );
  });

  it("renders, in both modes, the longest app and service names parseServices accepts", () => {
    const doc = base();
    const name = "a".repeat(128);
    Object.assign(route(doc), { app: name, service: name, backup: { app: name, service: "b" } });
    const r = parseServices(doc);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const backends = { [`${name}-${name}`]: { "10.0.0.1": { weight: 1 } } };
    const reload = renderNginxConf({ services: r.value, backends }, OPTIONS).conf;
    expect(reload).toContain(`-> ${name}-${name}:8080, backup ${name}-b:80`);
    const luaSource = Object.fromEntries(LUA_MODULES.map((m) => [m, "return {}\n"]));
    const dynamic = { ...OPTIONS, endpointsMode: "dynamic" as const, luaSource, pushToken: "ab".repeat(16) };
    expect(renderNginxConf({ services: r.value, backends }, dynamic).conf).toContain(`(${name}-${name})`);
    expect(parseEndpointKey(`/lb/backends/${name}-${name}/ips/10.0.0.1`, "{}").kind).toBe("endpoint");
    expect(parseEndpointKey(`/lb/backends/${name}-${name}x/ips/10.0.0.1`, "{}").kind).toBe("rejected");
  });

  it("throws RenderBug for a hostile endpoint address or state dir", () => {
    const services = model("a.com", "/", "a");
    expect(() => renderNginxConf({ services, backends: { "a-s": { "1.2.3.4;": { weight: 1 } } } }, OPTIONS)).toThrow(
      RenderBug,
    );
    expect(() => renderNginxConf({ services, backends: {} }, { dir: "/tmp/x; evil" })).toThrow(RenderBug);
  });
});
