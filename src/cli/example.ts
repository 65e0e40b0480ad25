import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { findNginx, nginxTest } from "../nginx/binary.js";
import { renderCommand } from "./render.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Renders examples/services.json with examples/backends.json and checks it with the real `nginx -t`. */
export async function exampleCommand(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-example-"));
  const code = await renderCommand({
    services: join(root, "examples/services.json"),
    backends: join(root, "examples/backends.json"),
    out: dir,
  });
  if (code !== 0) return code;
  const t = await nginxTest(findNginx(), join(dir, "nginx.conf"), dir);
  console.error(t.ok ? `nginx -t: the configuration in ${dir}/nginx.conf is valid` : `nginx -t failed:\n${t.output}`);
  return t.ok ? 0 : 1;
}
