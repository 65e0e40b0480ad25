import fc from "fast-check";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatProblem } from "../model/problem.js";
import { parseJsonText, readTextFile } from "./read-json.js";

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

describe("readTextFile", () => {
  // Node's readFile with an encoding decodes 512 KiB chunks one after another; readTextFile decodes the whole buffer.
  const CHUNK = 512 * 1024;
  // Bytes around the chunk boundaries: multi-byte characters whole, cut, overlong or stray, and a byte-order mark.
  const piece = fc.oneof(
    fc.constantFrom("é", "€", "😀", "\uFEFF", "a").map((c) => Buffer.from(c)),
    fc.uint8Array({ minLength: 1, maxLength: 4 }).map((b) => Buffer.from(b)),
  );

  it("property: any bytes read as readFile(file, 'utf8') reads them, across its chunk boundaries", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nlb-read-text-"));
    try {
      const file = join(dir, "f.json");
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(0, 1, 2, 3),
          fc.array(piece, { maxLength: 8 }),
          fc.array(piece, { maxLength: 8 }),
          async (chunks, before, after) => {
            // A body of ASCII up to just before a boundary (or none), then the pieces around it.
            const head = Buffer.alloc(chunks === 0 ? 0 : chunks * CHUNK - 3, 0x61);
            const bytes = Buffer.concat([head, ...before, ...after]);
            await writeFile(file, bytes);
            const got = await readTextFile(file);
            expect(got.ok && got.value === (await readFile(file, "utf8"))).toBe(true);
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a missing file is a problem naming it", async () => {
    const r = await readTextFile(join(tmpdir(), "nlb-no-such-dir", "services.json"));
    expect(r.ok).toBe(false);
  });
});
