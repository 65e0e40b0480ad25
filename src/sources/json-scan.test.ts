import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { scanJson } from "./json-scan.js";
import { tree, ws, write, type Tree } from "../../test/helpers/json-trees.js";

const parses = (text: string): boolean => {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
};
const err = (text: string) => {
  const e = scanJson(text).error;
  return e && `${e.line}:${e.column} ${e.message}`;
};

/** The paths of repeated keys, in text order, decoding keys as JSON does. */
const repeated = (t: Tree, path: (string | number)[] = []): string[] => {
  if (typeof t !== "object") return [];
  if ("arr" in t) return t.arr.flatMap((x, i) => repeated(x, [...path, i]));
  const seen = new Set<string>();
  return t.obj.flatMap(([k, v]) => {
    const key = JSON.parse(`"${k}"`) as string;
    const here = seen.has(key) ? [JSON.stringify([...path, key])] : [];
    seen.add(key);
    return [...here, ...repeated(v, [...path, key])];
  });
};

describe("scanJson", () => {
  it("accepts every JSON text JSON.parse accepts, however spaced", () => {
    fc.assert(
      fc.property(fc.json(), ws, (json, space) => {
        const spaced = JSON.stringify(JSON.parse(json), null, space.length > 1 ? "\t" : space);
        expect(scanJson(json).error).toBeNull();
        expect(scanJson(`${space}${spaced}${space}`).error).toBeNull();
      }),
      { numRuns: 300 },
    );
  });

  it("accepts a text exactly when JSON.parse does, on near-JSON texts", () => {
    const near = fc
      .tuple(
        fc.json(),
        fc.array(fc.tuple(fc.nat(), fc.nat(2), fc.constantFrom(..."{}[]\",:0-.eE+ \n\t\\u/'tfn1Aa\x01"))),
      )
      .map(([json, edits]) => {
        let s = json;
        for (const [at, op, c] of edits) {
          const p = s.length === 0 ? 0 : at % (s.length + 1);
          s =
            op === 0
              ? s.slice(0, p) + c + s.slice(p)
              : op === 1
                ? s.slice(0, p) + s.slice(p + 1)
                : s.slice(0, p) + c + s.slice(p + 1);
        }
        return s;
      });
    fc.assert(
      fc.property(fc.oneof(near, fc.string({ unit: fc.constantFrom(...'{}[]",:0123-.eE+ \ttruefalsn\\') })), (text) => {
        expect(scanJson(text).error === null).toBe(parses(text));
      }),
      { numRuns: 3000 },
    );
  });

  it("reports every repeated key with its path, as JSON.parse would decode it", () => {
    fc.assert(
      fc.property(tree, ws, (t, space) => {
        const text = write(t, space);
        expect(parses(text)).toBe(true);
        const scan = scanJson(text);
        expect(scan.error).toBeNull();
        expect(scan.duplicates.map((d) => JSON.stringify(d.path))).toEqual(repeated(t));
      }),
      { numRuns: 500 },
    );
  });

  it("says where a duplicate first was and where it came again", () => {
    const d = scanJson('{\n  "servers": [],\n  "x": {"a": 1, "\\u0061": 2},\n  "servers": []\n}').duplicates;
    expect(d.map((x) => [x.path, x.first, x.again])).toEqual([
      [["x", "a"], { line: 3, column: 9 }, { line: 3, column: 17 }],
      [["servers"], { line: 2, column: 3 }, { line: 4, column: 3 }],
    ]);
  });

  it.each([
    ['{\n  "a": 1,\n}', '2:9 a "," before "}": JSON allows no trailing comma'],
    ["[1,\n 2,]", '2:3 a "," before "]": JSON allows no trailing comma'],
    ['{\n  "a": 1\n  "b": 2\n}', '3:3 unexpected """ where a "," was expected (one is missing before this)'],
    ["{a: 1}", '1:2 unexpected "a" where a property name in double quotes was expected'],
    [
      "{'a': 1}",
      "1:2 a property name in double quotes was expected; JSON strings use double quotes, not single quotes",
    ],
    ['{"a": 1} // note', "1:10 JSON allows no comments"],
    ['{\n  "a": [1, 2', "2:13 the file ends before the [ opened at line 2 column 8 is closed"],
    ['{"a": {}', "1:9 the file ends before the { opened at line 1 column 1 is closed"],
    ['{"a": "x', '1:7 the string is never closed (a " is missing)'],
    ['{"a": "x\ty"}', "1:9 a raw control character U+0009 in a string: write it as \\t"],
    [
      '"\\x"',
      '1:2 invalid escape: "x" after a backslash in a string (JSON knows \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)',
    ],
    ["[01]", "1:2 invalid number: no leading zeros, and a digit must follow . or e"],
    ["[1.]", "1:2 invalid number: a digit must follow . or e"],
    ["[-]", '1:2 invalid number: a digit must follow "-"'],
    ['{"a": 1 "b"}', '1:9 unexpected """ where a "," was expected (one is missing before this)'],
    ['{"a" 1}', '1:6 unexpected "1" where a ":" was expected after the property name'],
    ["{} {}", '1:4 unexpected "{" after the end of the JSON value'],
    ["", "1:1 the file is empty"],
    [" \n ", "2:2 the file is empty"],
    ["[true, nul]", '1:8 unexpected "n" where a value was expected'],
  ])("%j: %s", (text, expected) => {
    expect(parses(text)).toBe(false);
    expect(err(text)).toBe(expected);
  });

  it("does not overflow on deep nesting", () => {
    expect(scanJson(`${"[".repeat(100_000)}${"]".repeat(100_000)}`).error).toBeNull();
    expect(err("[".repeat(100_000))).toMatch(/^1:100001 the file ends before the \[ opened at line 1 column 100000/);
  });
});
