import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { secureStateDir } from "./state-dir.js";

const roots: string[] = [];
afterAll(async () => Promise.all(roots.map((r) => rm(r, { recursive: true, force: true }))));
const root = async () => {
  const r = await mkdtemp(join(tmpdir(), "nginx-lb-state-dir-"));
  roots.push(r);
  return r;
};
const mode = async (p: string) => (await stat(p)).mode & 0o777;

test("an existing 0755 state dir (what systemd creates) is tightened to 0700, and says from what", async () => {
  const dir = join(await root(), "state");
  await mkdir(dir);
  await chmod(dir, 0o755);
  const r = await secureStateDir(dir);
  expect(r.ok && r.value).toEqual({ dir, tightenedFrom: 0o755 });
  expect(await mode(dir)).toBe(0o700);
  const again = await secureStateDir(dir);
  expect(again.ok && again.value.tightenedFrom).toBeNull();
});

test("a missing state dir is created 0700, parents included", async () => {
  const dir = join(await root(), "a/b/state");
  const r = await secureStateDir(dir);
  expect(r.ok).toBe(true);
  expect(await mode(dir)).toBe(0o700);
});

test("a state dir path that is a file is an error naming the dir and what to do", async () => {
  const file = join(await root(), "state");
  await writeFile(file, "");
  const r = await secureStateDir(file);
  expect(!r.ok && r.errors[0]).toMatchObject({ code: "state_dir", path: file });
  expect(!r.ok && r.errors[0]?.message).toMatch(/--state-dir/);
});
