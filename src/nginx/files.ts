import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Rendered } from "../render/index.js";
import { writeFileAtomic } from "../shared/files.js";

/**
 * Prepares a state dir for nginx: logs, temp and TLS dirs, owner-only (nginx's master reads and opens them before its
 * workers drop privileges). secureStateDir hands tmp/ to the workers' user at start; one created here later is
 * owner-only too.
 */
export async function prepareStateDir(dir: string): Promise<void> {
  for (const sub of ["logs", "tmp", "tls"]) await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
}

/** Writes the files a rendered config references (mode 0600: only nginx's master reads them). Content-named, so never in use. */
export async function writeRenderedFiles(dir: string, rendered: Rendered): Promise<void> {
  for (const f of rendered.files) await writeFileAtomic(join(dir, f.path), f.content, f.mode);
}

/** Writes nginx.conf and its files into a directory (the `render --out` form). */
export async function writeRendered(dir: string, rendered: Rendered, confName = "nginx.conf"): Promise<string> {
  await prepareStateDir(dir);
  await writeRenderedFiles(dir, rendered);
  const conf = join(dir, confName);
  await writeFile(conf, rendered.conf, { mode: 0o600 });
  return conf;
}
