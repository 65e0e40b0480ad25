import { describe, expect, it } from "vitest";
import { describePlan, planPush, pushBatches, pushTxns, type PushOp } from "./table-push.js";

const P = "/lb/services";
const k = (n: string) => `${P}/${n}`;
const srv = (domain: string, routes: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ domain_name: domain, routes, ...extra });
const cur = (n: string, value: string, modRevision = 5) => ({ key: k(n), value, modRevision });
const put = (key: string, value = "x"): PushOp => ({ kind: "put", key, value, modRevision: 0 });

describe("planPush", () => {
  it("equal tables: no writes", () =>
    expect(planPush([cur("a:80", "v")], new Map([[k("a:80"), "v"]])).ops).toEqual([]));
  it("deletes first, then changes, then additions, each guarded by its read revision", () =>
    expect(
      planPush(
        [cur("a:80", "v", 3), cur("b:80", "v", 4)],
        new Map([
          [k("b:80"), "w"],
          [k("c:80"), "v"],
        ]),
      ).ops,
    ).toEqual([
      { kind: "delete", key: k("a:80"), modRevision: 3 },
      { kind: "put", key: k("b:80"), value: "w", modRevision: 4 },
      { kind: "put", key: k("c:80"), value: "v", modRevision: 0 },
    ]));
  it("counts what stays", () => expect(planPush([cur("a:80", "v")], new Map([[k("a:80"), "v"]])).unchanged).toBe(1));
});

describe("pushBatches", () => {
  it("everything in one transaction when it fits", () => expect(pushBatches([put("a"), put("b")]).length).toBe(1));
  it("at most 127 writes a transaction (one compare is the prefix's)", () =>
    expect(pushBatches(Array.from({ length: 300 }, (_, i) => put(`k${i}`))).map((b) => b.length)).toEqual([
      127, 127, 46,
    ]));
  it("split by bytes, a key never split", () =>
    expect(
      pushBatches([put("a", "x".repeat(600)), put("b", "x".repeat(600))], { maxOps: 128, maxBytes: 4096 + 1000 })
        .length,
    ).toBe(2));
  it("a key larger than a batch still goes alone", () =>
    expect(pushBatches([put("a", "x".repeat(9000))], { maxOps: 128, maxBytes: 5000 }).length).toBe(1));
});

describe("pushTxns", () => {
  const many = (n: number, from = 0) => Array.from({ length: n }, (_, i) => cur(`s${i + from}:80`, "v", 7));
  const desired = (keys: { key: string }[], value = "v") => new Map(keys.map((c) => [c.key, value]));
  it("a push that fits one transaction holds every key it keeps too: a concurrent delete of one fails it whole", () =>
    expect(pushTxns(planPush([cur("a:80", "v", 3), cur("b:80", "v", 4)], new Map([[k("a:80"), "v"]])), 2)).toEqual([
      {
        ops: [{ kind: "delete", key: k("b:80"), modRevision: 4 }],
        held: [{ key: k("a:80"), modRevision: 3 }],
        countBefore: 2,
      },
    ]));
  it("kept keys that do not fit beside the writes are not held; the count check stays", () => {
    const read = many(200);
    const plan = planPush(read, new Map([...desired(read), [k("new:80"), "v"]]));
    expect(pushTxns(plan, 200)).toEqual([{ ops: plan.ops, held: [], countBefore: 200 }]);
  });
  it("each transaction expects the count the previous ones leave: additions add, deletions remove, changes neither", () => {
    const read = many(130);
    const plan = planPush(read.slice(0, 30), new Map([...desired(read.slice(0, 10), "w"), ...desired(many(200, 500))]));
    // 20 deletions, 10 changes, 200 additions: 230 writes in two transactions.
    expect(pushTxns(plan, 30).map((t) => [t.ops.length, t.held.length, t.countBefore])).toEqual([
      [127, 0, 30],
      [103, 0, 30 - 20 + 97],
    ]);
  });
  it("no count check when asked for none (a write of one server)", () =>
    expect(pushTxns(planPush([], new Map([[k("a:80"), "v"]])), null)[0]?.countBefore).toBeNull());
});

describe("describePlan", () => {
  const a = srv("a.test", { "/": { app: "x", service: "web" } });
  const tls = (key: string) => ({
    ssl_certificate: "-----BEGIN CERTIFICATE-----\nCERTBODY\n-----END CERTIFICATE-----",
    ssl_certificate_key: `-----BEGIN PRIVATE KEY-----\n${key}\n-----END PRIVATE KEY-----`,
  });
  const lines = (current: { key: string; value: string; modRevision: number }[], desired: Map<string, string>) =>
    describePlan(P, planPush(current, desired), current, desired);
  it("an added server with its routes", () =>
    expect(lines([], new Map([[k("a.test:80"), a]]))).toEqual(["+ a.test:80 (routes /)"]));
  it("a removed server", () => expect(lines([cur("a.test:80", a)], new Map())).toEqual(["- a.test:80"]));
  it("route changes by prefix", () =>
    expect(
      lines(
        [cur("a.test:80", a)],
        new Map([
          [k("a.test:80"), srv("a.test", { "/": { app: "y", service: "web" }, "/api": { app: "x", service: "api" } })],
        ]),
      ),
    ).toEqual(["~ a.test:80: route / changed: x-web:80 -> y-web:80; route /api added -> x-api:80"]));
  it("a new TLS key says changed, never its content", () => {
    const out = lines(
      [cur("a.test:80", srv("a.test", {}, tls("OLDKEY")))],
      new Map([[k("a.test:80"), srv("a.test", {}, tls("NEWKEY"))]]),
    );
    expect(out).toEqual(["~ a.test:80: TLS key changed"]);
    expect(out.join()).not.toMatch(/KEY-----|NEWKEY|CERTBODY/);
  });
});
