import { LUA_MODULES } from "../render/dynamic.js";
import { ROUTES_LUA_MODULES } from "../render/routes-dynamic.js";
import { CERTS_MODULE } from "../render/tls-dynamic.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { BackendSet, Endpoint } from "../model/backends.js";
import { parseServices, type Services } from "../model/services.js";
import { shareServers } from "../model/share-servers.js";
import type { RenderOptions } from "../render/index.js";
import { briefChange, diffRoutes } from "./diff.js";
import { compile, type EndpointsMode, type Target } from "./target.js";
import type { Health } from "../health/targets.js";
import { plan, type AppliedState, type Plan } from "../model/plan.js";

const NAMES = ["a", "b", "c", "d"];
const IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "::1"];
const OPTIONS: RenderOptions = {
  dir: "/tmp/nlb",
  controlPort: 9999,
  pushToken: "0123456789abcdef0123456789abcdef",
  luaSource: Object.fromEntries(LUA_MODULES.map((m) => [m, "return {}\n"])),
};

/** The key a default check of port 80 gives an endpoint. */
const KEY = (ip: string) => `http /healthz 200-399 2000ms 1000ms 2/3|${ip}|80`;

function services(routes: readonly (readonly [string, string, string | null, boolean?])[]): Services {
  const r = parseServices({
    servers: [
      {
        domain_name: "x.test",
        routes: Object.fromEntries(
          routes.map(([prefix, app, backup, checked]) => [
            prefix,
            {
              app,
              service: "s",
              ...(checked ? { health_check: {} } : {}),
              ...(backup
                ? { backup: { app: backup, service: "s", ...(checked ? { health_check: { type: "http" } } : {}) } }
                : {}),
            },
          ]),
        ),
      },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const routes = fc.uniqueArray(
  fc.tuple(
    fc.constantFrom("/", "/p", "/q", "/r/s"),
    fc.constantFrom(...NAMES),
    fc.option(fc.constantFrom(...NAMES), { nil: null }),
    fc.boolean(),
  ),
  { selector: (t) => t[0], minLength: 1, maxLength: 4 },
);
const record = fc.dictionary(fc.constantFrom(...IPS), fc.record({ weight: fc.integer({ min: 0, max: 3 }) }), {
  maxKeys: 4,
});
/** One source change: a new routing model, or one backend's record replaced or dropped (the others shared). */
const change = fc.oneof(
  fc.record({ kind: fc.constant("services" as const), routes }),
  fc.record({
    kind: fc.constant("backends" as const),
    name: fc.constantFrom(...NAMES),
    eps: fc.option(record, { nil: undefined }),
  }),
  fc.record({
    kind: fc.constant("health" as const),
    ip: fc.constantFrom(...IPS),
    state: fc.constantFrom("up" as const, "down" as const, null),
  }),
);

/**
 * A target without what it says against the previous one: what a full compile must equal. Its tables as records: a
 * Table built against a previous one holds the same entries in another shape (and order carries no meaning).
 */
const withoutChange = ({ change: _c, endpointsDelta: _e, routesDelta: _r, ...rest }: Target) => ({
  ...rest,
  endpoints: rest.endpoints?.toRecord() ?? null,
  routeTable: rest.routeTable?.toRecord() ?? null,
});

/** What nginx holds once `t` is pushed, with the deltas `plan` may use or without them. */
const held = (t: Target, deltas: boolean): AppliedState => ({
  mode: t.mode,
  generation: t.rendered.generation,
  endpoints: t.endpoints,
  routes: t.routeTable,
  certs: t.certs,
  ...(deltas ? { endpointsDelta: t.endpointsDelta, routesDelta: t.routesDelta } : {}),
});
const inAnyOrder = (p: Plan): Plan =>
  p.action !== "push"
    ? p
    : {
        ...p,
        upstreams: p.upstreams === "all" ? "all" : [...p.upstreams].sort(),
        ...(p.routes ? { routes: p.routes === "all" ? "all" : [...p.routes].sort() } : {}),
      };
/** The plan from `before` to `after` using the deltas equals the plan comparing whole tables (names in any order). */
const expectSamePlan = (before: Target, after: Target) =>
  expect(inAnyOrder(plan(held(before, false), held(after, true)))).toEqual(
    inAnyOrder(plan(held(before, false), held(after, false))),
  );

describe("compile", () => {
  it.each(["reload", "dynamic"] as const)(
    "builds incrementally exactly the target a full compile builds (%s mode)",
    (mode: EndpointsMode) => {
      fc.assert(
        fc.property(routes, fc.array(change, { maxLength: 10 }), (first, changes) => {
          let desired = { services: services(first), backends: {} as BackendSet };
          let health: Health = new Map();
          let target = compile(desired, null, mode, OPTIONS, health);
          for (const c of changes) {
            if (c.kind === "services") desired = { ...desired, services: services(c.routes) };
            else if (c.kind === "health") {
              const next = new Map(health);
              if (c.state === null) next.delete(KEY(c.ip));
              else next.set(KEY(c.ip), { state: c.state, since: "2026-01-01T00:00:00.000Z", reason: "r" });
              health = next;
            } else {
              const next: Record<string, Readonly<Record<string, Endpoint>>> = { ...desired.backends };
              if (c.eps === undefined) delete next[`${c.name}-s`];
              else next[`${c.name}-s`] = c.eps;
              desired = { ...desired, backends: next };
            }
            const incremental = compile(desired, target, mode, OPTIONS, health);
            const full = compile(desired, null, mode, OPTIONS, health);
            expect(withoutChange(incremental)).toEqual(withoutChange(full));
            expect(incremental.change).toEqual(briefChange(diffRoutes(target.routes, full.routes)));
            expectSamePlan(target, incremental);
            target = incremental;
          }
        }),
        { numRuns: 150 },
      );
    },
  );

  it("reuses what an endpoint change cannot alter, by reference", () => {
    const model = services([
      ["/p", "a", null],
      ["/q", "b", null],
    ]);
    const before: BackendSet = { "a-s": { "10.0.0.1": { weight: 1 } }, "b-s": { "10.0.0.2": { weight: 1 } } };
    const after: BackendSet = { ...before, "b-s": { "10.0.0.3": { weight: 1 } } };
    const dyn = compile({ services: model, backends: before }, null, "dynamic", OPTIONS);
    const dyn2 = compile({ services: model, backends: after }, dyn, "dynamic", OPTIONS);
    expect(dyn2.rendered).toBe(dyn.rendered);
    expect(dyn2.routes[0]).toBe(dyn.routes[0]);
    expect(dyn2.views[0]).toBe(dyn.views[0]);
    expect(dyn2.routes[1]).not.toBe(dyn.routes[1]);
    expect(dyn2.change.endpointsAdded).toEqual(["x.test:80/q 10.0.0.3:80 w1"]);
    const rel = compile({ services: model, backends: before }, null, "reload", OPTIONS);
    // A key no route uses changes: nothing to re-render.
    const rel2 = compile({ services: model, backends: { ...before, "z-s": {} } }, rel, "reload", OPTIONS);
    expect(rel2.rendered).toBe(rel.rendered);
    expect(rel2.topology).toBe(rel.topology);
    expect(compile({ services: model, backends: after }, rel, "reload", OPTIONS).rendered).not.toBe(rel.rendered);
  });
});

describe("compile with health", () => {
  const model = (backup: boolean) => services([["/p", "a", backup ? "b" : null, true]]);
  const backends: BackendSet = {
    "a-s": { "10.0.0.1": { weight: 1 }, "10.0.0.2": { weight: 2 } },
    "b-s": { "10.0.0.3": { weight: 1 } },
  };
  const down = (...ips: string[]): Health =>
    new Map(ips.map((ip) => [KEY(ip), { state: "down" as const, since: "2026-01-01T00:00:00.000Z", reason: "x" }]));
  const weights = (backup: boolean, health: Health, mode: EndpointsMode = "dynamic") => {
    const t = compile({ services: model(backup), backends }, null, mode, OPTIONS, health);
    const r = t.routes[0];
    return `${r?.members.map((m) => `${m.ip.slice(-1)}:${m.weight}${m.backup ? "b" : ""}`).join(" ")}${r?.failOpen ? " failOpen" : ""}`;
  };
  it.each([
    [false, [], "1:1 2:2"],
    [false, ["10.0.0.1"], "1:0 2:2"],
    [false, ["10.0.0.1", "10.0.0.2"], "1:1 2:2 failOpen"],
    [true, ["10.0.0.1", "10.0.0.2"], "1:0 2:0 3:1b"],
    [true, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "1:1 2:2 3:1b failOpen"],
    [true, ["10.0.0.3"], "1:1 2:2 3:0b"],
  ])("backup %s, down %j -> %s", (backup, ips, want) => expect(weights(backup, down(...ips))).toBe(want));
  it("reload mode renders an endpoint down by check as down", () => {
    const t = compile({ services: model(false), backends }, null, "reload", OPTIONS, down("10.0.0.1"));
    const conf = t.rendered.conf;
    expect(conf).toContain("server 10.0.0.1:80 down;");
    expect(conf).toMatch(/server 10\.0\.0\.2:80 weight=2/);
  });
  it("without health_check, verdicts change nothing", () => {
    const plain = services([["/p", "a", null]]);
    const t = compile({ services: plain, backends }, null, "dynamic", OPTIONS, down("10.0.0.1", "10.0.0.2"));
    expect(t.routes[0]?.members.map((m) => m.weight)).toEqual([1, 2]);
    expect(t.routes[0]?.health).toBeUndefined();
  });
});

describe("compile with routes and certificates pushed", () => {
  const fakePem = (label: string, body: string) => `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
  const options: RenderOptions = {
    ...OPTIONS,
    endpointsMode: "dynamic",
    routesMode: "dynamic",
    certsMode: "pushed",
    luaSource: Object.fromEntries([...LUA_MODULES, ...ROUTES_LUA_MODULES, CERTS_MODULE].map((m) => [m, "return {}\n"])),
    tlsPlaceholder: { cert: fakePem("CERTIFICATE", "AAAA"), key: fakePem("PRIVATE KEY", "BBBB") },
  };
  const tlsSites = (sites: readonly (readonly [string, number, string])[]): Services => {
    const r = parseServices({
      servers: sites.map(([domain, ssl, cert]) => ({
        domain_name: domain,
        frontend_port: 8080,
        ssl_port: ssl,
        ssl_certificate: fakePem("CERTIFICATE", cert),
        ssl_certificate_key: fakePem("PRIVATE KEY", `${cert}key`),
        routes: { "/": { app: "a", service: "s" } },
      })),
    });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  };
  const at = (services: Services, previous: Target | null) =>
    compile({ services, backends: {} }, previous, "dynamic", options);

  it("a rotation or a new TLS site on a TLS port keeps the generation; a new TLS port changes it", () => {
    const t1 = at(tlsSites([["a.test", 8443, "AAAA"]]), null);
    expect(t1.rendered.conf).not.toContain("a.test");
    expect([...(t1.certs?.keys() ?? [])]).toEqual(["8443 a.test"]);
    const rotated = at(tlsSites([["a.test", 8443, "CCCC"]]), t1);
    expect(rotated.rendered.generation).toBe(t1.rendered.generation);
    expect(rotated.certs?.get("8443 a.test")?.id).not.toBe(t1.certs?.get("8443 a.test")?.id);
    const more = at(
      tlsSites([
        ["a.test", 8443, "CCCC"],
        ["b.test", 8443, "DDDD"],
      ]),
      rotated,
    );
    expect(more.rendered.generation).toBe(t1.rendered.generation);
    expect(more.certs?.get("8443 a.test")).toBe(rotated.certs?.get("8443 a.test"));
    expect(more.routeTable?.get("8443 b.test")).toMatch(/^\/ nlb_/);
    const port = at(
      tlsSites([
        ["a.test", 8443, "CCCC"],
        ["b.test", 9443, "DDDD"],
      ]),
      more,
    );
    expect(port.rendered.generation).not.toBe(t1.rendered.generation);
  });

  it("holds no certificates when routes are rendered", () => {
    const t = compile({ services: tlsSites([["a.test", 8443, "AAAA"]]), backends: {} }, null, "dynamic", {
      ...options,
      routesMode: "reload",
    });
    expect(t.certs).toBeNull();
  });
});

describe("compile of a routing change whose unchanged servers are shared (shareServers)", () => {
  const fakePem = (label: string, body: string) => `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
  const pushed: RenderOptions = {
    ...OPTIONS,
    endpointsMode: "dynamic",
    routesMode: "dynamic",
    certsMode: "pushed",
    luaSource: Object.fromEntries([...LUA_MODULES, ...ROUTES_LUA_MODULES, CERTS_MODULE].map((m) => [m, "return {}\n"])),
    tlsPlaceholder: { cert: fakePem("CERTIFICATE", "AAAA"), key: fakePem("PRIVATE KEY", "BBBB") },
  };
  const DOMAINS = ["a.test", "b.test", "c.test", "d.test", "e.test"];
  const MORE = [...DOMAINS, "f.test", "*.g.test", "h.test"];
  /** One server as services.json has it: its port, optional TLS port and certificate, its routes. */
  const server = fc.record({
    port: fc.constantFrom(80, 8080),
    tls: fc.option(fc.tuple(fc.constantFrom(8443, 9443), fc.constantFrom("AAAA", "CCCC")), { nil: null }),
    routes,
  });
  type Spec = typeof server extends fc.Arbitrary<infer T> ? T : never;
  const model = (specs: ReadonlyMap<string, Spec>): Services => {
    const r = parseServices({
      servers: [...specs].map(([domain, s]) => ({
        domain_name: domain,
        frontend_port: s.port,
        ...(s.tls
          ? {
              ssl_port: s.tls[0],
              ssl_certificate: fakePem("CERTIFICATE", s.tls[1]),
              ssl_certificate_key: fakePem("PRIVATE KEY", `${s.tls[1]}key`),
            }
          : {}),
        routes: Object.fromEntries(
          s.routes.map(([prefix, app, backup, checked]) => [
            prefix,
            {
              app,
              service: "s",
              ...(checked ? { health_check: {} } : {}),
              ...(backup ? { backup: { app: backup, service: "s" } } : {}),
            },
          ]),
        ),
      })),
    });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  };
  /** A source change: some servers edited, added or removed (the rest parsed again, equal), or an endpoint record. */
  const step = fc.oneof(
    fc.record({
      kind: fc.constant("services" as const),
      edits: fc.array(fc.tuple(fc.constantFrom(...DOMAINS), fc.option(server, { nil: null })), { maxLength: 3 }),
    }),
    fc.record({
      kind: fc.constant("backends" as const),
      name: fc.constantFrom(...NAMES),
      eps: fc.option(record, { nil: undefined }),
    }),
  );

  it.each([
    ["routes and certificates pushed", pushed, "dynamic"],
    ["dynamic endpoints", OPTIONS, "dynamic"],
    ["reload", OPTIONS, "reload"],
  ] as const)("equals a full compile, key order of pushed tables included (%s)", (_, options, mode) => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(fc.constantFrom(...DOMAINS), server), { selector: (t) => t[0], maxLength: 4 }),
        fc.array(step, { maxLength: 8 }),
        (first, steps) => {
          let specs = new Map(first);
          let desired = { services: model(specs), backends: {} as BackendSet };
          let target = compile(desired, null, mode, options);
          for (const s of steps) {
            if (s.kind === "services") {
              specs = new Map(specs);
              for (const [domain, spec] of s.edits)
                if (spec === null) specs.delete(domain);
                else specs.set(domain, spec);
              // As the services file source emits it: parsed anew, unchanged servers shared with the last model.
              desired = { ...desired, services: shareServers(desired.services, model(specs)) };
            } else {
              const next: Record<string, Readonly<Record<string, Endpoint>>> = { ...desired.backends };
              if (s.eps === undefined) delete next[`${s.name}-s`];
              else next[`${s.name}-s`] = s.eps;
              desired = { ...desired, backends: next };
            }
            const incremental = compile(desired, target, mode, options);
            const full = compile(desired, null, mode, options);
            expect(withoutChange(incremental)).toEqual(withoutChange(full));
            expect(incremental.change).toEqual(briefChange(diffRoutes(target.routes, full.routes)));
            expectSamePlan(target, incremental);
            target = incremental;
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  /** A routing change anywhere in the list: a server inserted, removed, replaced or moved at a position. */
  const edit = fc.oneof(
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), domain: fc.constantFrom(...MORE), spec: server }),
    fc.record({ kind: fc.constant("remove" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), spec: server }),
    fc.record({ kind: fc.constant("move" as const), at: fc.nat(), to: fc.nat() }),
  );
  const applyEdit = (
    list: readonly (readonly [string, Spec])[],
    e: typeof edit extends fc.Arbitrary<infer T> ? T : never,
  ) => {
    const out = [...list];
    const at = out.length === 0 ? 0 : e.at % out.length;
    if (e.kind === "insert") {
      if (!out.some(([d]) => d === e.domain)) out.splice(e.at % (out.length + 1), 0, [e.domain, e.spec]);
    } else if (out.length === 0) return out;
    else if (e.kind === "remove") out.splice(at, 1);
    else if (e.kind === "replace") out[at] = [out[at]?.[0] ?? "", e.spec];
    else {
      const [moved] = out.splice(at, 1);
      if (moved) out.splice(e.to % (out.length + 1), 0, moved);
    }
    return out;
  };
  const filled: BackendSet = Object.fromEntries(
    NAMES.map((n, i) => [`${n}-s`, { [IPS[i] ?? "10.0.0.1"]: { weight: 1 }, "10.0.0.9": { weight: i } }]),
  );

  it.each([
    ["routes and certificates pushed", pushed, "dynamic"],
    ["dynamic endpoints", OPTIONS, "dynamic"],
    ["reload", OPTIONS, "reload"],
  ] as const)(
    "splices a routing change anywhere in the list: equal to a full compile, the servers around it kept (%s)",
    (_, options, mode) => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.tuple(fc.constantFrom(...MORE), server), { selector: (t) => t[0], maxLength: 6 }),
          fc.array(fc.array(edit, { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 6 }),
          (first, steps) => {
            let list: readonly (readonly [string, Spec])[] = first;
            let target = compile({ services: model(new Map(list)), backends: filled }, null, mode, options);
            for (const edits of steps) {
              for (const e of edits) list = applyEdit(list, e);
              const services = shareServers(target.desired.services, model(new Map(list)));
              const desired = { services, backends: filled };
              const incremental = compile(desired, target, mode, options);
              const full = compile(desired, null, mode, options);
              expect(withoutChange(incremental)).toEqual(withoutChange(full));
              expect([...(incremental.certs?.keys() ?? [])]).toEqual([...(full.certs?.keys() ?? [])]);
              expect(incremental.change).toEqual(briefChange(diffRoutes(target.routes, full.routes)));
              expectSamePlan(target, incremental);
              // The servers before the first one that differs keep their routes and views by reference.
              const before = target.desired.services.servers;
              let head = 0;
              while (head < before.length && before[head] === services.servers[head]) head++;
              const kept = before.slice(0, head).reduce((n, s) => n + s.routes.length, 0);
              for (let i = 0; i < kept; i++) {
                expect(incremental.routes[i]).toBe(target.routes[i]);
                expect(incremental.views[i]).toBe(target.views[i]);
              }
              if (head > 0) expect(incremental.topology.servers[head - 1]).toBe(target.topology.servers[head - 1]);
              target = incremental;
            }
          },
        ),
        { numRuns: 100 },
      );
    },
  );

  it("keeps an unchanged server's routes, views and table value, and nginx.conf when the ports stay", () => {
    const specs = new Map<string, Spec>([
      ["a.test", { port: 80, tls: null, routes: [["/", "a", null, false]] }],
      ["b.test", { port: 80, tls: null, routes: [["/", "b", null, false]] }],
    ]);
    const t1 = compile({ services: model(specs), backends: {} }, null, "dynamic", pushed);
    const next = new Map(specs).set("b.test", { port: 80, tls: null, routes: [["/p", "c", null, false]] });
    const services = shareServers(t1.desired.services, model(next));
    expect(services.servers[0]).toBe(t1.desired.services.servers[0]);
    const t2 = compile({ services, backends: {} }, t1, "dynamic", pushed);
    expect(t2.routes[0]).toBe(t1.routes[0]);
    expect(t2.views[0]).toBe(t1.views[0]);
    expect(t2.rendered).toBe(t1.rendered);
    expect(t2.routeTable?.get("80 b.test")).toMatch(/^\/p nlb_\w+ \/ c-s;$/);
    expect(t2.change.upstreamsAdded).toEqual(["b.test:80/p"]);
    expect(t2.change.upstreamsRemoved).toEqual(["b.test:80/"]);
    const port = compile(
      { services: model(new Map(next).set("c.test", specs.get("a.test") as Spec)), backends: {} },
      t2,
      "dynamic",
      pushed,
    );
    expect(port.rendered).toBe(t2.rendered);
    const moved = new Map(next).set("c.test", { port: 8080, tls: null, routes: [] });
    expect(compile({ services: model(moved), backends: {} }, t2, "dynamic", pushed).rendered.generation).not.toBe(
      t2.rendered.generation,
    );
  });
});
