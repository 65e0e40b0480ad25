import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupNginx, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

afterAll(cleanupNginx);

/** Runs `nginx-lb run` with the admin server on, and resolves with its exit code (null: still running after 20 s). */
async function run(extra: string[]): Promise<{ code: number | null; output: string }> {
  const dir = await tempDir("nginx-lb-start-failure-");
  await writeFile(join(dir, "services.json"), '{"servers":[]}');
  const c = cli(["run", "--services", join(dir, "services.json"), "--state-dir", join(dir, "state"), ...extra]);
  const timer = setTimeout(() => c.child.kill("SIGKILL"), 20_000);
  const code = await c.exited;
  clearTimeout(timer);
  return { code, output: c.output() };
}

describe("nginx-lb run that cannot start", () => {
  it("exits 1 when the controller cannot start, although the admin server was already listening", async () => {
    const r = await run(["--nginx", "/bin/false", "--endpoints-mode", "dynamic", "--admin-listen", "127.0.0.1:0"]);
    expect(r.output).toContain("admin server listening");
    expect(r.output).toContain("nginx-lb could not start");
    expect(r.output).toContain("--endpoints-mode dynamic needs nginx's Lua module");
    expect(r.code).toBe(1);
  });

  it("exits 1 naming a flag nginx.conf could not hold, before touching anything", async () => {
    const r = await run(["--listen-host", "localhost", "--admin-listen", "127.0.0.1:0"]);
    expect(r.output).toContain('--listen-host: must be an IPv4 or IPv6 address, or *, got "localhost"');
    expect(r.output).not.toContain("admin server listening");
    expect(r.code).toBe(1);
  });
});
