import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { tree, ws, write } from "../../test/helpers/json-trees.js";
import { scanJson } from "./json-scan.js";
import { repeatsKey } from "./repeated-key.js";

const oracle = (text: string) => scanJson(text).duplicates.length > 0;

describe("repeatsKey", () => {
  it("says a key repeats exactly when the scanner finds a repeated key", () => {
    fc.assert(
      fc.property(tree, ws, (t, space) => {
        const text = write(t, space);
        expect(repeatsKey(text, JSON.parse(text))).toBe(oracle(text));
      }),
      { numRuns: 1000 },
    );
  });

  it("counts keys, not strings that look like keys inside values", () => {
    const texts = [
      '{"a": "b\\": 1", "c": 2}',
      '{"a": "\\\\", "b": ":"}',
      '{"a": ["x", "y" ], "a" : 1}',
      '{"__proto__": {"a": 1}, "__proto__": 2}',
      '{"a": 1, "\\u0061": 2}',
      '[{"a": 1}, {"a": 2}]',
      '{"s": "{\\"a\\": 1, \\"a\\": 2}"}',
    ];
    expect(texts.map((t) => repeatsKey(t, JSON.parse(t)))).toEqual(texts.map(oracle));
    expect(texts.map(oracle)).toEqual([false, false, true, true, true, false, false]);
  });
});
