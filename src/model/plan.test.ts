import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { plan, type AppliedState, type PushedEndpoint } from "./plan.js";
import { Table } from "./table.js";

/** The cases write sets as records; plan reads Tables. */
type Sets = Readonly<Record<string, readonly PushedEndpoint[]>>;

const U1 = "nlb_0000000000000001";
const U2 = "nlb_0000000000000002";
const sets = (w: number): Sets => ({
  [U1]: [
    { ip: "127.0.0.2", port: 80, weight: w, backup: false },
    { ip: "127.0.0.3", port: 80, weight: 1, backup: true },
  ],
  [U2]: [],
});
const fewer: Sets = { [U1]: sets(1)[U1] ?? [] };
const reordered: Sets = Object.fromEntries(Object.entries(sets(1)).reverse());
const edit = (f: (e: PushedEndpoint) => object): Sets => ({
  ...sets(1),
  [U1]: (sets(1)[U1] ?? []).map((e) => ({ ...e, ...f(e) })),
});
const dyn = (generation: string, endpoints: Sets | null): AppliedState => ({
  mode: "dynamic",
  generation,
  endpoints: endpoints && Table.of(endpoints),
});
const rel = (generation: string): AppliedState => ({ mode: "reload", generation, endpoints: null });

const none = { action: "none" };
const reload = { action: "reload" };
const push = (upstreams: readonly string[] | "all") => ({ action: "push", upstreams });

describe("plan", () => {
  it.each([
    ["nothing runs yet (dynamic)", null, dyn("g1", sets(1)), false, reload],
    ["nothing runs yet (reload)", null, rel("g1"), false, reload],
    ["the rendered config differs", dyn("g1", sets(1)), dyn("g2", sets(1)), false, reload],
    ["the config and the sets differ", dyn("g1", sets(1)), dyn("g2", sets(2)), false, reload],
    ["the endpoints mode changes", rel("g1"), dyn("g1", sets(1)), false, reload],
    ["forced, though nothing changed", rel("g1"), rel("g1"), true, reload],
    ["forced, dynamic, nothing changed", dyn("g1", sets(1)), dyn("g1", sets(1)), true, reload],
    ["only a weight differs", dyn("g1", sets(1)), dyn("g1", sets(2)), false, push([U1])],
    [
      "a flipped backup flag",
      dyn("g1", sets(1)),
      dyn(
        "g1",
        edit((e) => ({ backup: !e.backup })),
      ),
      false,
      push([U1]),
    ],
    [
      "a changed port",
      dyn("g1", sets(1)),
      dyn(
        "g1",
        edit(() => ({ port: 81 })),
      ),
      false,
      push([U1]),
    ],
    ["an upstream fewer", dyn("g1", sets(1)), dyn("g1", fewer), false, push("all")],
    ["an upstream more", dyn("g1", fewer), dyn("g1", sets(1)), false, push("all")],
    ["other upstream names", dyn("g1", { nlb_0000000000000003: [] }), dyn("g1", fewer), false, push("all")],
    ["nginx's sets unknown (restart, failed push)", dyn("g1", null), dyn("g1", sets(1)), false, push("all")],
    ["equal sets in another order", dyn("g1", sets(1)), dyn("g1", reordered), false, none],
    ["equal configs (reload mode)", rel("g1"), rel("g1"), false, none],
  ] as const)("%s", (_, running, desired, force, expected) => {
    expect(plan(running, desired, force)).toEqual(expected);
  });
});

describe("plan with pushed certificates (dynamic routes)", () => {
  const table = { "80 a.test": "/ nlb_0000000000000001 / a-web;" };
  const ids = (...pairs: [string, string][]) => new Map(pairs.map(([k, id]) => [k, { id }]));
  const state = (generation: string, certs: ReturnType<typeof ids> | null): AppliedState => ({
    ...dyn(generation, sets(1)),
    routes: Table.of(table),
    certs,
  });
  const a1 = ids(["443 a.test", "00000000000000a1"]);

  it.each([
    ["the same certificates", state("g1", a1), state("g1", a1), none],
    [
      "a rotated certificate",
      state("g1", a1),
      state("g1", ids(["443 a.test", "00000000000000a2"])),
      { action: "push", upstreams: [], routes: [], certs: true },
    ],
    [
      "a new TLS site",
      state("g1", a1),
      state("g1", ids(["443 a.test", "00000000000000a1"], ["443 b.test", "00000000000000b1"])),
      { action: "push", upstreams: [], routes: [], certs: true },
    ],
    [
      "a removed TLS site",
      state("g1", a1),
      state("g1", ids()),
      { action: "push", upstreams: [], routes: [], certs: true },
    ],
    [
      "nginx's certificates unknown",
      state("g1", null),
      state("g1", a1),
      { action: "push", upstreams: [], routes: [], certs: true },
    ],
    ["a new TLS port (another config)", state("g1", a1), state("g2", a1), reload],
  ] as const)("%s", (_, running, desired, expected) => {
    expect(plan(running, desired)).toEqual(expected);
  });
});

describe("plan with deltas (a routing change compiled against the last target)", () => {
  const KEYS = ["80 a.test", "80 b.test", "443 a.test", "80 c.test"];
  const NAMES = [U1, U2, "nlb_0000000000000003"];
  const table = fc.dictionary(fc.constantFrom(...KEYS), fc.constantFrom("/ u1 / a-web;", "/p u2 / b-web;", ""));
  const endpoints = fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(sets(1)[U1] ?? [], sets(2)[U1] ?? [], []));
  /** `after` described against `before`: the keys where they differ, plus any others (a delta may say more). */
  const delta = <T>(before: Table<T>, after: Table<T>, extra: readonly string[]) => ({
    base: before,
    keys: [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k)).concat(extra),
  });
  const sorted = (l: readonly string[] | "all" | undefined) => (Array.isArray(l) ? [...l].sort() : l);

  it("names the same upstreams and servers as comparing whole tables, whenever nginx holds the delta's base", () => {
    fc.assert(
      fc.property(
        table,
        table,
        endpoints,
        endpoints,
        fc.array(fc.constantFrom(...KEYS, ...NAMES), { maxLength: 3 }),
        fc.boolean(),
        (t1, t2, e1, e2, extra, holdsBase) => {
          const running = { ...dyn("g1", e1), routes: Table.of(t1), endpoints: Table.of(e1) };
          const desired = { ...dyn("g1", e2), routes: Table.of(t2), endpoints: Table.of(e2) };
          // Equal tables, but not the ones nginx holds: the deltas must not be trusted.
          const base = holdsBase ? running : { routes: Table.of(t1), endpoints: Table.of(e1) };
          const withDeltas: AppliedState = {
            ...desired,
            routesDelta: delta(base.routes, desired.routes, extra),
            endpointsDelta: delta(base.endpoints, desired.endpoints, extra),
          };
          const a = plan(running, withDeltas);
          const b = plan(running, desired);
          expect(a.action).toBe(b.action);
          if (a.action === "push" && b.action === "push") {
            expect(sorted(a.upstreams)).toEqual(sorted(b.upstreams));
            expect(sorted(a.routes)).toEqual(sorted(b.routes));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
