/**
 * The compiled CLI the benchmark runs: `nginx-lb` as installed runs dist/ (bin/nginx-lb.js), not the sources through
 * tsx, whose loader costs the controller seconds of start-up on a loaded machine. Built here with the package's own
 * `tsc -p tsconfig.json` when dist/ is missing or older than a source file. `NGINX_LB_BENCH_TSX=1` runs the sources
 * through tsx instead (as the tests do).
 */
import { execFile } from "node:child_process";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Whether benchmark controllers run the compiled CLI (the default) or the sources through tsx. */
export const runCompiled = process.env["NGINX_LB_BENCH_TSX"] !== "1";

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, await newestSource(p));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) newest = Math.max(newest, (await stat(p)).mtimeMs);
  }
  return newest;
}

let built: Promise<void> | null = null;

/** Builds dist/ once per run when it is missing or stale (tsc writes every output file, the CLI's entry included). */
export function ensureCompiled(): Promise<void> {
  built ??= (async () => {
    const entry = await stat(join(ROOT, "dist/cli/main.js")).catch(() => null);
    if (entry && entry.mtimeMs > (await newestSource(join(ROOT, "src")))) return;
    await promisify(execFile)(
      process.execPath,
      [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"],
      {
        cwd: ROOT,
        timeout: 600_000,
      },
    );
  })();
  return built;
}
