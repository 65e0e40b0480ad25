import { readFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { backendSetFromKeys } from "../../src/model/backends.js";
import { normalizePrefix } from "../../src/model/grammar.js";
import { parseServices } from "../../src/model/services.js";
import { renderNginxConf } from "../../src/render/index.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";

// Generated models and backend sets, rendered and given to the real `nginx -t`. Runs are few (each costs an nginx
// start-up check) and every nginx -t is bounded by nginxTest's timeout.
const RUNS = Number(process.env["PROPERTY_RUNS"] ?? 25);
const cert = readFileSync(new URL("../../examples/tls/example.crt", import.meta.url), "utf8");
const key = readFileSync(new URL("../../examples/tls/example.key", import.meta.url), "utf8");

const label = fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?$/);
const domain = fc
  .tuple(fc.boolean(), fc.array(label, { minLength: 1, maxLength: 3 }))
  .map(([wild, labels]) => `${wild ? "*." : ""}${labels.join(".")}`);
const segment = fc.stringMatching(/^[A-Za-z0-9._~!*+,:@=-]{1,8}$/).filter((s) => s !== "." && s !== "..");
const urlPath = fc
  .tuple(fc.array(segment, { maxLength: 3 }), fc.boolean())
  .map(([segs, slash]) => (segs.length === 0 ? "/" : `/${segs.join("/")}${slash ? "/" : ""}`));
const name = fc.stringMatching(/^[A-Za-z0-9._-]{1,10}$/);
const backendPort = fc.integer({ min: 1, max: 65535 });
const ref = fc.record({ app: name, service: name, port: backendPort });
const route = fc
  .record({ ref, backend_path: fc.option(urlPath, { nil: undefined }), backup: fc.option(ref, { nil: undefined }) })
  .map(({ ref: r, backend_path, backup }) => ({
    ...r,
    ...(backend_path === undefined ? {} : { backend_path }),
    ...(backup === undefined ? {} : { backup }),
  }));
const routes = fc
  .uniqueArray(fc.tuple(urlPath, route), { maxLength: 4, selector: ([p]) => normalizePrefix(p) })
  .map((entries) => Object.fromEntries(entries));
// Plain and TLS ports come from disjoint sets, so a generated model never uses one port for both.
const server = fc.record({
  domain_name: domain,
  frontend_port: fc.constantFrom(80, 8080, 8081),
  tls: fc.option(fc.constantFrom(443, 8443), { nil: undefined }),
  routes,
});
const services = fc
  .uniqueArray(server, {
    minLength: 1,
    maxLength: 5,
    selector: (s) => `${s.domain_name.toLowerCase()} ${s.frontend_port}`,
  })
  .map((servers) => ({
    servers: servers.map(({ tls, ...s }) =>
      tls === undefined ? s : { ...s, ssl_port: tls, ssl_certificate: cert, ssl_certificate_key: key },
    ),
  }))
  // Two servers with one domain on different plain ports may not share a TLS port either.
  .filter((doc) => parseServices(doc).ok);

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
const ipv6 = fc.constantFrom("::1", "2001:db8::1", "fd00::a:b", "2001:DB8:0:0:1:0:0:2", "::ffff:10.1.2.3");
const endpoints = fc.dictionary(fc.oneof(ipv4, ipv6), fc.integer({ min: 0, max: 1000 }), { maxKeys: 4 });

/** Registry keys for every backend the model names (each possibly empty), as etcd would hold them. */
const withBackends = services.chain((doc) => {
  const names = new Set<string>();
  for (const s of doc.servers)
    for (const r of Object.values(s.routes)) {
      names.add(`${r.app}-${r.service}`);
      if (r.backup) names.add(`${r.backup.app}-${r.backup.service}`);
    }
  return fc.tuple(fc.constant(doc), fc.tuple(...[...names].map((n) => fc.tuple(fc.constant(n), endpoints))));
});

afterAll(cleanupNginx);

describe("generated valid input", () => {
  it("always renders a config the real nginx -t accepts, byte-identical on every render", async () => {
    await fc.assert(
      fc.asyncProperty(withBackends, async ([doc, sets]) => {
        const parsed = parseServices(doc);
        expect(parsed.ok).toBe(true);
        if (!parsed.ok) return;
        const entries: [string, string][] = sets.flatMap(([n, eps]) =>
          Object.entries(eps).map(([ip, weight]): [string, string] => [
            `/lb/backends/${n}/ips/${ip}`,
            JSON.stringify({ weight }),
          ]),
        );
        const { set, warnings } = backendSetFromKeys(entries);
        expect(warnings).toEqual([]);
        const dir = await tempDir("nginx-lb-prop-");
        const options = { dir, listenHost: "127.0.0.1", controlPort: 9901 };
        const rendered = renderNginxConf({ services: parsed.value, backends: set }, options);
        expect(renderNginxConf({ services: parsed.value, backends: set }, options)).toEqual(rendered);
        const t = await checkConfig(rendered, dir);
        expect(t.ok, `${t.output}\n${JSON.stringify(doc)}`).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });
});

describe("generated invalid input", () => {
  const bad = fc.constantFrom(";", "{", "}", "$", "#", '"', "'", " ", "\n", "\\", "%", "\u0430", "\u037e", "\t");
  type Doc = { servers: { domain_name: string; routes: Record<string, Record<string, unknown>> }[] };
  const insert = (s: string, at: number, c: string) =>
    s.slice(0, at % (s.length + 1)) + c + s.slice(at % (s.length + 1));
  const mutations = ["domain_name", "route key", "app", "service", "backend_path", "port", "backup port"] as const;

  it("always fails validation, with an error naming the mutated field, and so renders nothing", () => {
    fc.assert(
      fc.property(services, fc.constantFrom(...mutations), bad, fc.nat(), (doc0, what, c, at) => {
        const doc = structuredClone(doc0) as Doc;
        const s = doc.servers[0];
        if (!s) return;
        const [firstKey, r] = Object.entries(s.routes)[0] ?? [];
        let path: string;
        if (what === "domain_name" || firstKey === undefined || r === undefined) {
          s.domain_name = insert(s.domain_name, at, c);
          path = "servers[0].domain_name";
        } else if (what === "route key") {
          const k = insert(firstKey, at, c);
          delete s.routes[firstKey];
          s.routes[k] = r;
          path = `servers[0].routes${/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`}`;
        } else {
          const field = what === "backup port" ? "port" : what;
          const target =
            what === "backup port" ? ((r["backup"] ??= { app: "a", service: "b" }) as Record<string, unknown>) : r;
          const before = String(target[field] ?? (field === "backend_path" ? "/" : "80"));
          target[field] = insert(before, at, c);
          path = `servers[0].routes[${JSON.stringify(firstKey)}].${what === "backup port" ? "backup." : ""}${field}`;
        }
        const parsed = parseServices(doc);
        expect(parsed.ok).toBe(false);
        if (!parsed.ok) expect(parsed.errors.map((e) => e.path)).toContain(path);
      }),
      { numRuns: 500 },
    );
  });

  it("registry keys with anything but a literal address are always rejected", () => {
    fc.assert(
      fc.property(ipv4, bad, fc.nat(), (ip, c, at) => {
        const key = `/lb/backends/a-b/ips/${insert(ip, at, c)}`;
        const { set, warnings } = backendSetFromKeys([[key, '{"weight":1}']]);
        expect(set).toEqual({});
        expect(warnings.map((w) => w.path)).toEqual([key]);
      }),
      { numRuns: 300 },
    );
  });
});
