import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { fnv1a64 } from "./hash.js";

describe("fnv1a64", () => {
  test("keeps the values it always had (upstream names and generations must not change with a new version)", () => {
    expect(fnv1a64("")).toBe("cbf29ce484222325");
    expect(fnv1a64("a")).toBe("af63da998601ec8c");
    expect(fnv1a64("foobar")).toBe("bf3553e6f73967e8");
  });

  test("is FNV-1a 64 over each code unit's bytes, with its signed carry, for any text (property)", () => {
    const M = 0xffffffffffffffffn;
    const reference = (text: string) => {
      let h = 0xcbf29ce484222325n;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        h ^= BigInt(c & 0xff) | (BigInt(c >>> 8) << 32n);
        const negative = (h & 0x80000000n) !== 0n;
        h = (h * 0x100000001b3n - (negative ? 0x1b3n << 32n : 0n)) & M;
      }
      return h.toString(16).padStart(16, "0");
    };
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 64 }), (text) => {
        expect(fnv1a64(text)).toBe(reference(text));
      }),
      { numRuns: 1000 },
    );
    expect(fnv1a64("\uffff\u00ff\u0100")).toBe(reference("\uffff\u00ff\u0100"));
  });

  test("a list hashes as its concatenation, however the text is cut (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "grapheme", maxLength: 40 }), { maxLength: 12 }), (parts) => {
        expect(fnv1a64(parts)).toBe(fnv1a64(parts.join("")));
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.nat(), fc.nat(), (text, a, b) => {
        const [i, j] = [a % (text.length + 1), b % (text.length + 1)].sort((x, y) => x - y) as [number, number];
        expect(fnv1a64([text.slice(0, i), text.slice(i, j), text.slice(j)])).toBe(fnv1a64(text));
      }),
      { numRuns: 300 },
    );
  });
});
