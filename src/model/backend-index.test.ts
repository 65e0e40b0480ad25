import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BackendIndex } from "./backend-index.js";
import { backendSetFromKeys } from "./backends.js";

const key = fc.oneof(
  fc
    .tuple(
      fc.constantFrom("a-api", "b-web", "c.x-y_z", "bad name"),
      // "::1" three ways: two keys naming one address, the one written last wins.
      fc.constantFrom("10.0.0.1", "10.0.0.2", "::1", "0:0::1", "0:0:0:0:0:0:0:1", "fe80::2", "host", "1.2.3.4:80"),
    )
    .map(([name, ip]) => `/lb/backends/${name}/ips/${ip}`),
  fc.constantFrom("/lb/backends/a-api/x/10.0.0.1", "/lb/backends-old/a-api/ips/10.0.0.1", "/lb/backends/a-api/ips"),
);
const value = fc.constantFrom('{"weight":50}', '{"weight":0}', '{"weight":7}', "{}", "nope", '{"weight":-1}');
const op = fc.oneof(
  fc.record({ kind: fc.constant("put" as const), key, value }),
  fc.record({ kind: fc.constant("del" as const), key }),
  fc.record({ kind: fc.constant("snap" as const) }),
);

/** Same set, byte for byte once serialised; the same warnings (their order is not part of the contract). */
function same(index: BackendIndex, map: Map<string, string>): void {
  const expected = backendSetFromKeys(map);
  const got = index.snapshot();
  expect(JSON.stringify(got.set)).toBe(JSON.stringify(expected.set));
  const lines = (ws: { path: string; message: string }[]) => new Set(ws.map((w) => `${w.path} ${w.message}`));
  expect(lines(got.warnings)).toEqual(lines(expected.warnings));
  expect([...index.keys()].sort()).toEqual([...map.keys()].sort());
  expect(index.size).toBe(map.size);
}

describe("BackendIndex", () => {
  it("always equals backendSetFromKeys over the same key/value map (any sequence of puts, deletes, snapshots)", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const map = new Map<string, string>();
        const index = new BackendIndex();
        for (const o of ops) {
          if (o.kind === "put") {
            map.delete(o.key);
            map.set(o.key, o.value);
            index.set(o.key, o.value);
          } else if (o.kind === "del") {
            map.delete(o.key);
            index.delete(o.key);
          } else same(index, map);
        }
        same(index, map);
      }),
      { numRuns: 300 },
    );
  });

  it("says when nothing visible changed, and shares untouched records between snapshots", () => {
    const index = new BackendIndex();
    index.set("/lb/backends/a-api/ips/10.0.0.1", '{"weight":5}');
    index.set("/lb/backends/b-api/ips/10.0.0.2", '{"weight":5}');
    const first = index.snapshot();
    index.set("/lb/backends/a-api/ips/10.0.0.1", '{"weight":5}');
    expect(index.changed).toBe(false);
    index.set("/lb/backends/a-api/ips/10.0.0.3", '{"weight":1}');
    expect(index.changed).toBe(true);
    const second = index.snapshot();
    expect(second.set["b-api"]).toBe(first.set["b-api"]);
    expect(second.set["a-api"]).toEqual({ "10.0.0.1": { weight: 5 }, "10.0.0.3": { weight: 1 } });
  });

  it("keeps one record per weight, shared by every endpoint of that weight", () => {
    const index = new BackendIndex();
    for (let i = 1; i <= 3; i++) index.set(`/lb/backends/a-api/ips/10.0.0.${i}`, '{"weight":5}');
    index.set("/lb/backends/b-api/ips/10.0.0.1", '{"weight":5}');
    const { set } = index.snapshot();
    const records = [...Object.values(set["a-api"] ?? {}), ...Object.values(set["b-api"] ?? {})];
    expect(records).toHaveLength(4);
    expect(new Set(records).size).toBe(1);
    expect(Object.isFrozen(records[0])).toBe(true);
  });
});
