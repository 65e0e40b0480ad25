import { chmod, chown, lstat, mkdir, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { secureStateDir } from "./state-dir.js";
import type { WorkerUser } from "./worker-user.js";

const roots: string[] = [];
afterAll(async () => Promise.all(roots.map((r) => rm(r, { recursive: true, force: true }))));
const root = async () => {
  const r = await mkdtemp(join(tmpdir(), "nginx-lb-state-dir-"));
  roots.push(r);
  return r;
};
const mode = async (p: string) => (await lstat(p)).mode & 0o777;
const isRoot = process.getuid?.() === 0;
/** Any ids do for chown as root; no such account needs to exist. */
const worker: WorkerUser = { name: "nlbworker", group: "nlbworker", uid: 4242, gid: 4343 };

test("an existing 0755 state dir (what systemd creates) is tightened to 0700, and says from what", async () => {
  const dir = join(await root(), "state");
  await mkdir(dir);
  await chmod(dir, 0o755);
  const r = await secureStateDir(dir, null);
  expect(r.ok && r.value).toMatchObject({ dir, mode: 0o700, tightenedFrom: 0o755, tightened: [] });
  expect(await mode(dir)).toBe(0o700);
  expect(await mode(join(dir, "tmp"))).toBe(0o700);
  const again = await secureStateDir(dir, null);
  expect(again.ok && again.value.tightenedFrom).toBeNull();
});

test("a missing state dir is created 0700, parents included", async () => {
  const dir = join(await root(), "a/b/state");
  const r = await secureStateDir(dir, null);
  expect(r.ok).toBe(true);
  expect(await mode(dir)).toBe(0o700);
});

test("a state dir path that is a file is an error naming the dir and what to do", async () => {
  const file = join(await root(), "state");
  await writeFile(file, "");
  const r = await secureStateDir(file, null);
  expect(!r.ok && r.errors[0]).toMatchObject({ code: "state_dir", path: file });
  expect(!r.ok && r.errors[0]?.message).toMatch(/--state-dir/);
});

test.skipIf(!isRoot)(
  "with a worker user: dir 0710 in the workers' group, tmp/ theirs 0700, every other entry owner-only",
  async () => {
    const parent = await root();
    await chmod(parent, 0o755);
    const dir = join(parent, "state");
    await mkdir(join(dir, "lua"), { recursive: true });
    await chmod(dir, 0o755);
    await chmod(join(dir, "lua"), 0o755);
    // What an older version left: a world-readable nginx.conf (with the push token) and Lua modules.
    await writeFile(join(dir, "nginx.conf"), "push token", { mode: 0o644 });
    await writeFile(join(dir, "lua/x.lua"), "", { mode: 0o644 });
    await writeFile(join(dir, "state.json"), "{}", { mode: 0o600 });
    const target = join(parent, "elsewhere");
    await writeFile(target, "", { mode: 0o644 });
    await symlink(target, join(dir, "link"));
    const r = await secureStateDir(dir, worker);
    expect(r.ok && r.value).toMatchObject({ mode: 0o710, tightenedFrom: 0o755, unreachableVia: null });
    expect(r.ok && [...r.value.tightened].sort()).toEqual(["lua", "nginx.conf"]);
    const st = await stat(dir);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, worker.gid, 0o710]);
    const tmp = await stat(join(dir, "tmp"));
    expect([tmp.uid, tmp.gid, tmp.mode & 0o777]).toEqual([worker.uid, worker.gid, 0o700]);
    expect(await mode(join(dir, "nginx.conf"))).toBe(0o600);
    expect(await mode(join(dir, "lua"))).toBe(0o700);
    expect(await mode(join(dir, "state.json"))).toBe(0o600);
    // A symlink's target is not ours to change.
    expect(await mode(target)).toBe(0o644);

    // A 0700 dir gains only the group's pass-through: not a tightening.
    const again = await secureStateDir(dir, worker);
    expect(again.ok && again.value).toMatchObject({ tightenedFrom: null, tightened: [] });
    // Back to not root (no worker user): 0700, and tmp/ ours again.
    const plain = await secureStateDir(dir, null);
    expect(plain.ok && plain.value).toMatchObject({ mode: 0o700, tightenedFrom: 0o710 });
    expect((await stat(join(dir, "tmp"))).uid).toBe(0);
  },
);

test.skipIf(!isRoot)("a parent the workers cannot pass through is named (they could not reach tmp/)", async () => {
  const parent = await root();
  await chmod(parent, 0o700);
  const r = await secureStateDir(join(parent, "state"), worker);
  expect(r.ok && r.value.unreachableVia).toBe(parent);
  await chmod(parent, 0o711);
  const again = await secureStateDir(join(parent, "state"), worker);
  expect(again.ok && again.value.unreachableVia).toBeNull();
});

test.skipIf(!isRoot)("a state dir owned by another user is refused even as root, and left as it was", async () => {
  const dir = join(await root(), "state");
  await mkdir(dir);
  await chmod(dir, 0o755);
  await chown(dir, 65534, 65534);
  for (const w of [worker, null]) {
    const r = await secureStateDir(dir, w);
    expect(!r.ok && r.errors[0]?.message).toMatch(/is owned by uid 65534, not by uid 0 .*chown it to uid 0/);
  }
  expect(await mode(dir)).toBe(0o755);
});

test.skipIf(!isRoot)("a tmp that is not a directory (a symlink) is an error, not followed", async () => {
  const dir = join(await root(), "state");
  await mkdir(dir, { recursive: true });
  const elsewhere = await root();
  await symlink(elsewhere, join(dir, "tmp"));
  const r = await secureStateDir(dir, worker);
  expect(!r.ok && r.errors[0]?.message).toMatch(/tmp is not a directory: remove it/);
  expect((await stat(elsewhere)).uid).toBe(0);
});
