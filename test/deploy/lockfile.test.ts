/**
 * `npm run example` installs the npm dependencies first (scripts/ensure-deps.sh); that must leave package-lock.json
 * byte for byte as committed. Runs the script's dependency step in a copy holding package.json, the lock and the
 * script, with no node_modules, so the install really happens (from the npm registry) and the shared one is untouched.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, readFile, utimes } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { cleanupNginx, tempDir } from "../helpers/nginx.js";

const ROOT = new URL("../..", import.meta.url).pathname;

afterAll(cleanupNginx);

test("the dependency step of `npm run example` installs without rewriting package-lock.json", async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
  const example = pkg.scripts["example"] ?? "";
  const [deps = ""] = example.split(" && tsx ");
  expect(deps).toContain("scripts/ensure-deps.sh");
  const dir = await tempDir("nginx-lb-lock-");
  for (const f of ["package.json", "package-lock.json", "scripts/ensure-deps.sh"])
    await cp(join(ROOT, f), join(dir, f));
  // A lock newer than any install, as after a pull that changed it.
  const later = new Date(Date.now() + 1000);
  await utimes(join(dir, "package-lock.json"), later, later);
  const before = await readFile(join(dir, "package-lock.json"));
  const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile("sh", ["-c", deps], { cwd: dir, timeout: 300_000, maxBuffer: 16 << 20 }, (err, _out, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr }),
    ),
  );
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toContain("installing npm dependencies");
  expect(existsSync(join(dir, "node_modules/commander/package.json"))).toBe(true);
  expect((await readFile(join(dir, "package-lock.json"))).equals(before)).toBe(true);
}, 360_000);
