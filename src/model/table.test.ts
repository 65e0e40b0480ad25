import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Table } from "./table.js";

const key = fc.constantFrom("a", "b", "c", "d", "e", "f", "g", "h", "__proto__", "constructor", "0", "10");
// `undefined` removes; a value of null is a value like any other.
const value = fc.option(fc.constantFrom(1, 2, null), { nil: undefined });
const change = fc.tuple(key, value);

/** The table holds exactly what the reference map holds, through every way of reading it. */
function same(table: Table<number | null>, ref: Map<string, number | null>): void {
  expect(table.size).toBe(ref.size);
  expect(new Map(table)).toEqual(ref);
  expect([...table.keys()].sort()).toEqual([...ref.keys()].sort());
  for (const k of ["a", "b", "c", "d", "e", "f", "g", "h", "__proto__", "constructor", "0", "10", "zz"]) {
    expect(table.has(k)).toBe(ref.has(k));
    expect(table.get(k)).toBe(ref.get(k));
  }
}

describe("Table", () => {
  it("equals a Map given the same changes, in batches of any size (small bases fold their overlay often)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(key, fc.constantFrom(1, 2, null)), { maxLength: 12 }),
        fc.array(fc.array(change, { maxLength: 40 }), { maxLength: 30 }),
        (initial, batches) => {
          let table = Table.from(initial);
          const ref = new Map(initial);
          same(table, ref);
          for (const batch of batches) {
            const before = new Map(table);
            const next = table.with(batch);
            for (const [k, v] of batch)
              if (v === undefined) ref.delete(k);
              else ref.set(k, v);
            same(next, ref);
            // Immutable: the table it was made from holds what it held.
            expect(new Map(table)).toEqual(before);
            table = next;
          }
        },
      ),
    );
  });

  it("keeps the base's order, an overlaid value in its key's place, and added keys after it", () => {
    const t = Table.of({ a: 1, b: 2, c: 3 }).with([
      ["b", 20],
      ["d", 4],
      ["a", undefined],
    ]);
    expect([...t]).toEqual([
      ["b", 20],
      ["c", 3],
      ["d", 4],
    ]);
    expect(t.toRecord()).toEqual({ b: 20, c: 3, d: 4 });
  });

  it("folds a grown overlay into a new base, so a long run of changes stays cheap to read", () => {
    let t = Table.from(Array.from({ length: 1000 }, (_, i): [string, number] => [`k${i}`, i]));
    for (let i = 0; i < 500; i++) t = t.with([[`k${i}`, -i]]);
    expect(t.size).toBe(1000);
    expect(t.get("k499")).toBe(-499);
    expect(t.get("k500")).toBe(500);
    // The overlay never outgrows its bound (32 + base/16 keys): after 500 one-key changes it was folded at least once.
    const overlay = (t as unknown as { overlay: ReadonlyMap<string, unknown> }).overlay;
    expect(overlay.size).toBeLessThanOrEqual(32 + (1000 >> 4));
  });
});
