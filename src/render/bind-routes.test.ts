import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { BackendSet, Endpoint } from "../model/backends.js";
import { parseServices, type Services } from "../model/services.js";
import { NO_HEALTH } from "../health/targets.js";
import { bindRoutes, rebindRoutes, serverSplice, spliceRoutes } from "./bind-routes.js";

const NAMES = ["a", "b", "c", "d"];
const IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "::1"];

function services(routes: [string, string, string | null][]): Services {
  const r = parseServices({
    servers: [
      {
        domain_name: "x.test",
        routes: Object.fromEntries(
          routes.map(([prefix, app, backup]) => [
            prefix,
            { app, service: "s", ...(backup ? { backup: { app: backup, service: "s" } } : {}) },
          ]),
        ),
      },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const record = fc.dictionary(fc.constantFrom(...IPS), fc.record({ weight: fc.integer({ min: 0, max: 3 }) }), {
  maxKeys: 4,
});
/** One registry change: a backend's record replaced (or dropped), every other record shared by reference. */
const change = fc.record({ name: fc.constantFrom(...NAMES), eps: fc.option(record, { nil: undefined }) });

describe("bindRoutes", () => {
  it("re-binds an endpoint change incrementally to exactly what a full bind gives", () => {
    const routes = fc.uniqueArray(
      fc.tuple(
        fc.constantFrom("/", "/p", "/q", "/r/s"),
        fc.constantFrom(...NAMES),
        fc.option(fc.constantFrom(...NAMES), { nil: null }),
      ),
      { selector: (t) => t[0], minLength: 1, maxLength: 4 },
    );
    fc.assert(
      fc.property(routes, fc.array(change, { maxLength: 12 }), (rs, changes) => {
        const model = services(rs);
        let set: BackendSet = {};
        let routes = bindRoutes(model, set);
        for (const c of changes) {
          const next: Record<string, Readonly<Record<string, Endpoint>>> = { ...set };
          if (c.eps === undefined) delete next[`${c.name}-s`];
          else next[`${c.name}-s`] = c.eps;
          routes = rebindRoutes(routes, set, next);
          set = next;
          expect(routes).toEqual(bindRoutes(model, set));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("keeps an untouched route's BoundRoute by reference", () => {
    const model = services([
      ["/p", "a", null],
      ["/q", "b", null],
    ]);
    const before: BackendSet = { "a-s": { "10.0.0.1": { weight: 1 } }, "b-s": { "10.0.0.2": { weight: 1 } } };
    const bound = bindRoutes(model, before);
    const [p1, q1] = bound;
    const [p2, q2] = rebindRoutes(bound, before, { ...before, "b-s": { "10.0.0.3": { weight: 1 } } });
    expect(p2).toBe(p1);
    expect(q2).not.toBe(q1);
    expect(q2?.members.map((m) => m.ip)).toEqual(["10.0.0.3"]);
  });
});

describe("spliceRoutes", () => {
  const model = (domains: readonly string[]): Services => {
    const r = parseServices({
      servers: domains.map((d) => ({ domain_name: d, routes: { "/": { app: "a", service: "s" } } })),
    });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  };
  const backends: BackendSet = { "a-s": { "10.0.0.1": { weight: 1 } } };
  /** `after`'s servers with `before`'s objects where the domain is the same (as shareServers leaves them). */
  const shared = (before: Services, after: Services): Services => ({
    servers: after.servers.map((s) => before.servers.find((o) => o.domain === s.domain) ?? s),
  });

  it("binds only the servers between the splice's head and tail, and equals a full bind", () => {
    const before = model(["a.test", "b.test", "c.test"]);
    const previous = bindRoutes(before, backends);
    const after = shared(before, model(["a.test", "new.test", "c.test"]));
    const cut = serverSplice(before.servers, after.servers);
    expect(cut).toEqual({ head: 1, tail: 1, headRoutes: 1, tailRoutes: 1 });
    const spliced = spliceRoutes(previous, after, cut, backends, NO_HEALTH);
    expect(spliced?.routes).toEqual(bindRoutes(after, backends));
    expect(spliced?.routes[0]).toBe(previous[0]);
    expect(spliced?.routes[2]).toBe(previous[2]);
    expect(spliced?.before).toEqual([previous[1]]);
    expect(spliced?.after.map((r) => r.server.domain)).toEqual(["new.test"]);
  });

  it("gives up where names depend on order: a kept name with a collision suffix, or a new name a kept route holds", () => {
    const before = model(["a.test", "b.test"]);
    const bound = bindRoutes(before, backends);
    const after = shared(before, model(["a.test", "b.test", "new.test"]));
    const cut = serverSplice(before.servers, after.servers);
    expect(spliceRoutes(bound, after, cut, backends, NO_HEALTH)).not.toBeNull();
    const suffixed = bound.map((r, i) => (i === 0 ? { ...r, upstream: `${r.upstream}_2` } : r));
    expect(spliceRoutes(suffixed, after, cut, backends, NO_HEALTH)).toBeNull();
    const fresh = bindRoutes(model(["new.test"]), backends)[0]?.upstream ?? "";
    const taken = bound.map((r, i) => (i === 1 ? { ...r, upstream: fresh } : r));
    expect(spliceRoutes(taken, after, cut, backends, NO_HEALTH)).toBeNull();
  });
});
