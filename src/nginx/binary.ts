import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { childEnv, trackChild } from "../shared/children.js";

/**
 * The nginx binary to use: an explicit path (`--nginx`, which commander also fills from `NGINX_LB_NGINX`), or the
 * first of the usual places.
 */
export function findNginx(explicit?: string): string {
  if (explicit) return explicit;
  for (const p of ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx", "/usr/bin/nginx"])
    if (existsSync(p)) return p;
  return "nginx";
}

export interface NginxTestResult {
  readonly ok: boolean;
  /** nginx's own words, trimmed: what `nginx -t` printed. */
  readonly output: string;
  readonly ms: number;
}

/** Runs `nginx -t` on a config file, with the state dir as prefix; never touches /etc/nginx. */
export function nginxTest(nginx: string, confFile: string, prefix: string): Promise<NginxTestResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = execFile(
      nginx,
      ["-t", "-q", "-p", `${prefix}/`, "-c", confFile, "-e", `${prefix}/logs/error.log`],
      { timeout: 60_000, maxBuffer: 4 << 20, env: childEnv(process.env) },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`.trim();
        const ms = performance.now() - started;
        if (err && (err as NodeJS.ErrnoException).code === "ENOENT")
          resolve({
            ok: false,
            output: `nginx not found at ${nginx}: install it (apt-get install nginx) or pass --nginx`,
            ms,
          });
        else resolve({ ok: !err, output, ms });
      },
    );
    trackChild(child);
  });
}
