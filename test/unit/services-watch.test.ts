import { mkdtemp, open, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Problem } from "../../src/model/problem.js";
import type { Services } from "../../src/model/services.js";
import { ServicesFileSource } from "../../src/sources/services-source.js";

/**
 * The services file watcher (src/sources/watch-file.ts) against the real filesystem: a file renamed into place is
 * taken at once, while a writer in place is waited for, so a half-written file is never applied nor reported.
 * The writer's quiet time here is seconds (production: 50 ms) so that the difference shows on a loaded machine.
 */
const QUIET_MS = 3_000;

const text = (domains: readonly string[]) =>
  `${JSON.stringify(
    {
      version: "0.1",
      servers: domains.map((d) => ({ domain_name: d, routes: { "/": { app: "web", service: "front" } } })),
    },
    null,
    2,
  )}\n`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Watched {
  readonly file: string;
  readonly emitted: { domains: string[]; at: number }[];
  readonly rejected: readonly Problem[][];
  until(n: number, timeoutMs: number): Promise<boolean>;
}

const aborts: AbortController[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const a of aborts.splice(0)) a.abort();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function watched(initial: string | null): Promise<Watched> {
  const dir = await mkdtemp(join(tmpdir(), "nlb-watch-"));
  dirs.push(dir);
  const file = join(dir, "services.json");
  if (initial !== null) await writeFile(file, initial);
  const emitted: { domains: string[]; at: number }[] = [];
  const rejected: Problem[][] = [];
  const abort = new AbortController();
  aborts.push(abort);
  const source = new ServicesFileSource(file, true, undefined, undefined, QUIET_MS);
  await source.start(
    abort.signal,
    (s: { value: Services }) => emitted.push({ domains: s.value.servers.map((x) => x.domain), at: performance.now() }),
    (errors) => rejected.push([...errors]),
  );
  return {
    file,
    emitted,
    rejected,
    async until(n, timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      while (emitted.length < n && performance.now() < deadline) await sleep(10);
      return emitted.length >= n;
    },
  };
}

/** Writes `content` into `file` in place (truncated first) in `pieces` parts, `pauseMs` apart. */
async function writeSlowly(file: string, content: string, pieces: number, pauseMs: number): Promise<void> {
  const fh = await open(file, "w");
  try {
    const size = Math.ceil(content.length / pieces);
    for (let i = 0; i < content.length; i += size) {
      await fh.write(content.slice(i, i + size));
      await fh.sync();
      await sleep(pauseMs);
    }
  } finally {
    await fh.close();
  }
}

describe("the services file watcher", () => {
  it("takes a file renamed into place at once, without waiting for the writer's quiet time", async () => {
    const w = await watched(text(["a.test"]));
    expect(w.emitted.map((e) => e.domains)).toEqual([["a.test"]]);
    await writeFile(`${w.file}.tmp`, text(["a.test", "b.test"]));
    const t0 = performance.now();
    await rename(`${w.file}.tmp`, w.file);
    expect(await w.until(2, QUIET_MS * 3)).toBe(true);
    // Well within the quiet time a write in place waits for (generous: the machine may be loaded).
    expect((w.emitted[1]?.at ?? Infinity) - t0).toBeLessThan(QUIET_MS / 2);
    expect(w.emitted[1]?.domains).toEqual(["a.test", "b.test"]);
    expect(w.rejected).toEqual([]);
  });

  it("waits for a slow writer in place: a half-written file is neither applied nor reported", async () => {
    const w = await watched(text(["a.test"]));
    const next = text(["a.test", "b.test", "c.test"]);
    // Pauses well below the quiet time, so the writer never looks done before it is.
    await writeSlowly(w.file, next, 6, 150);
    const done = performance.now();
    expect(await w.until(2, QUIET_MS * 4)).toBe(true);
    await sleep(300);
    expect(w.emitted.map((e) => e.domains)).toEqual([["a.test"], ["a.test", "b.test", "c.test"]]);
    expect(w.emitted[1]?.at ?? 0).toBeGreaterThanOrEqual(done);
    expect(w.rejected).toEqual([]);
  });

  it("waits for a slow writer that creates the file (a rename event): nothing half-written is applied or reported", async () => {
    const w = await watched(null);
    // The start found no file: that one rejection is expected.
    expect(w.rejected.map((r) => r.map((p) => p.code))).toEqual([["file_missing"]]);
    await writeSlowly(w.file, text(["a.test", "b.test"]), 6, 150);
    const done = performance.now();
    expect(await w.until(1, QUIET_MS * 4)).toBe(true);
    await sleep(300);
    expect(w.emitted.map((e) => e.domains)).toEqual([["a.test", "b.test"]]);
    expect(w.emitted[0]?.at ?? 0).toBeGreaterThanOrEqual(done);
    expect(w.rejected).toHaveLength(1);
  });

  it("reports a file renamed into place that is invalid, once the quiet time has passed", async () => {
    const w = await watched(text(["a.test"]));
    await writeFile(`${w.file}.tmp`, `{"servers": [}`);
    await rename(`${w.file}.tmp`, w.file);
    const deadline = performance.now() + QUIET_MS * 4;
    while (w.rejected.length === 0 && performance.now() < deadline) await sleep(20);
    expect(w.rejected.map((r) => r.map((p) => p.code))).toEqual([["invalid_json"]]);
    expect(w.emitted).toHaveLength(1);
  });
});
