import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { writeFileAtomic, writePieces } from "./files.js";

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nginx-lb-files-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("writePieces", () => {
  test("the file holds the pieces joined, UTF-8, whatever their sizes against the buffer's", async () => {
    // Pieces of every kind of character (one-byte, two- and three-byte, surrogate pairs and lone surrogates), some
    // longer than the buffer, against buffers from a few bytes up.
    const piece = fc.oneof(
      fc.string(),
      fc.string({ unit: "binary" }),
      fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) }),
      fc.string({ minLength: 40, maxLength: 300 }),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 30 }), fc.integer({ min: 4, max: 256 }), async (pieces, size) => {
        const file = join(dir, `p${++n}`);
        const fh = await open(file, "w");
        let bytes: number;
        try {
          bytes = await writePieces(fh, pieces, size);
        } finally {
          await fh.close();
        }
        const want = Buffer.from(pieces.join(""));
        const got = await readFile(file);
        expect(got.equals(want)).toBe(true);
        expect(bytes).toBe(want.length);
      }),
      { numRuns: 200 },
    );
  });

  test("writeFileAtomic of pieces equals writeFileAtomic of their text (the default buffer, a file of megabytes)", async () => {
    const pieces = Array.from({ length: 40_000 }, (_, i) => `{"name":"s${i}-web","é":"${"x".repeat(i % 97)}"},`);
    await writeFileAtomic(join(dir, "pieces"), pieces);
    await writeFileAtomic(join(dir, "text"), pieces.join(""));
    const [a, b] = await Promise.all([readFile(join(dir, "pieces")), readFile(join(dir, "text"))]);
    expect(a.length).toBeGreaterThan(2 << 20);
    expect(a.equals(b)).toBe(true);
  });
});
