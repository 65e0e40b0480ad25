import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Rendered } from "../render/index.js";
import { writeFileAtomic } from "../shared/files.js";

/** Prepares a state dir for nginx: logs and temp dirs. */
export async function prepareStateDir(dir: string): Promise<void> {
  await mkdir(join(dir, "logs"), { recursive: true });
  await mkdir(join(dir, "tmp"), { recursive: true });
  await mkdir(join(dir, "tls"), { recursive: true, mode: 0o700 });
}

/** Writes the files a rendered config references (TLS material at mode 0600). Content-named, so never in use. */
export async function writeRenderedFiles(dir: string, rendered: Rendered): Promise<void> {
  for (const f of rendered.files) await writeFileAtomic(join(dir, f.path), f.content, f.mode);
}

/** Writes nginx.conf and its files into a directory (the `render --out` form). */
export async function writeRendered(dir: string, rendered: Rendered, confName = "nginx.conf"): Promise<string> {
  await prepareStateDir(dir);
  await writeRenderedFiles(dir, rendered);
  const conf = join(dir, confName);
  await writeFile(conf, rendered.conf);
  return conf;
}
