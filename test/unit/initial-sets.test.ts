import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EndpointSets } from "../../src/model/plan.js";
import { Table } from "../../src/model/table.js";
import { writeInitialSets } from "../../src/nginx/initial-sets.js";
import { encodeSets } from "../../src/nginx/push-format.js";

const sets: EndpointSets = Table.of({ nlb_0123456789abcdef: [{ ip: "10.0.0.1", port: 80, weight: 1, backup: false }] });
let dir = "";

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "nlb-initial-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("writeInitialSets", () => {
  it("writes the push format at mode 0600, and replaces an older file whole", async () => {
    const first = await writeInitialSets(dir, 1, Table.empty());
    expect(first).toEqual({ ok: true, path: join(dir, "endpoints.sets"), bytes: encodeSets(1, []).length });
    // A file someone left readable is replaced by a 0600 one, not rewritten in place.
    await writeFile(join(dir, "endpoints.sets"), "old", { mode: 0o644 });
    expect((await writeInitialSets(dir, 2, sets)).ok).toBe(true);
    expect(await readFile(join(dir, "endpoints.sets"), "utf8")).toBe(encodeSets(2, sets));
    expect((await stat(join(dir, "endpoints.sets"))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["endpoints.sets"]);
  });

  it("writes sets larger than a write batch in pieces, byte for byte the push format", async () => {
    const many: EndpointSets = Table.from(
      Array.from({ length: 3000 }, (_, i) => [
        `nlb_${i.toString(16).padStart(16, "0")}`,
        Array.from({ length: 10 }, (_, k) => ({
          ip: `10.${i >> 8}.${i & 255}.${k + 1}`,
          port: 8080,
          weight: k,
          backup: k === 9,
        })),
      ]),
    );
    const text = encodeSets(7, many);
    expect(text.length).toBeGreaterThan(3 * (64 << 10));
    expect(await writeInitialSets(dir, 7, many)).toEqual({
      ok: true,
      path: join(dir, "endpoints.sets"),
      bytes: text.length,
    });
    expect(await readFile(join(dir, "endpoints.sets"), "utf8")).toBe(text);
  });

  it("returns why it failed, keeps the old file and leaves no temp file behind", async () => {
    expect((await writeInitialSets(dir, 1, sets)).ok).toBe(true);
    const missing = await writeInitialSets(join(dir, "gone"), 2, sets);
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.error).toMatch(/cannot write the start-up endpoint sets .*gone.*ENOENT.*state dir/);
    // The rename fails (a non-empty directory holds the name): the temp file must go.
    const blocked = join(dir, "blocked");
    await mkdir(join(blocked, "endpoints.sets", "x"), { recursive: true });
    const out = await writeInitialSets(blocked, 3, sets);
    expect(out.ok).toBe(false);
    expect(await readdir(blocked)).toEqual(["endpoints.sets"]);
    expect(await readFile(join(dir, "endpoints.sets"), "utf8")).toBe(encodeSets(1, sets));
  });

  it("never writes through a link planted at the temp name", async () => {
    const victim = join(dir, "victim");
    await writeFile(victim, "untouched");
    const { symlink } = await import("node:fs/promises");
    await symlink(victim, join(dir, `endpoints.sets.tmp-${process.pid}`));
    expect((await writeInitialSets(dir, 4, sets)).ok).toBe(true);
    expect(await readFile(victim, "utf8")).toBe("untouched");
    expect(await readFile(join(dir, "endpoints.sets"), "utf8")).toBe(encodeSets(4, sets));
  });
});
