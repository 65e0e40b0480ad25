import { describe, expect, it } from "vitest";
import { formatProblem } from "../model/problem.js";
import { parseJsonText } from "./read-json.js";

const problems = (text: string) => {
  const r = parseJsonText(text);
  return [...(r.ok ? [] : r.errors), ...r.warnings].map(formatProblem);
};

describe("parseJsonText", () => {
  it("drops a byte-order mark", () =>
    expect(parseJsonText('\uFEFF{"a":1}')).toMatchObject({ ok: true, value: { a: 1 } }));
  it("keeps a byte-order mark that is not first as the syntax error it is", () =>
    expect(problems('{"a":1}\uFEFF')).toEqual([
      "(file): is not valid JSON: line 1 column 8: unexpected U+FEFF after the end of the JSON value",
    ]));
  it("gives line and column of a syntax error", () =>
    expect(problems('{\n "a": 1,\n "b": tru\n}')).toEqual([
      '(file): is not valid JSON: line 3 column 7: unexpected "t" where a value was expected',
    ]));
  it("warns of a repeated key with its path", () =>
    expect(problems('{"s":[{"k":1,\n"k":2}]}')).toEqual([
      "s[0].k: appears twice in one object (line 1 column 8, again line 2 column 1); only the last one counts: remove the other",
    ]));
  it("summarises past 20 repeated keys", () => {
    const p = problems(`{${Array.from({ length: 30 }, () => '"k":1').join(",")}}`);
    expect(p).toHaveLength(21);
    expect(p[20]).toBe("(file): has 9 more repeated keys");
  });
});
