import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { sortStrings } from "./sort.js";

describe("sortStrings", () => {
  it("orders any strings as the default sort does, whether they come sorted or not (property)", () => {
    const strings = fc.array(fc.string({ unit: "binary", maxLength: 6 }), { maxLength: 12 });
    fc.assert(
      fc.property(strings, fc.boolean(), (list, presorted) => {
        const input = presorted ? [...list].sort() : [...list];
        expect(sortStrings([...input])).toEqual([...list].sort());
      }),
      { numRuns: 1000 },
    );
    expect(sortStrings(["10.0.0.9", "10.0.0.10", "10.0.0.1"])).toEqual(["10.0.0.1", "10.0.0.10", "10.0.0.9"]);
  });
});
