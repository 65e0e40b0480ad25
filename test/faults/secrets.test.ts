import { execFile, spawnSync } from "node:child_process";
import { open, readFile, mkdir, chmod, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { workerPids } from "../../src/nginx/process.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

/**
 * Issue 11.8, 11.10 (state dir) and 11.12 against the real `nginx-lb run`: nginx never holds the controller's
 * secrets, the state dir is closed to other local users, and a secret is never taken from the command line.
 */

const run = promisify(execFile);
const AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"];
const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

/**
 * How often `needle` occurs in the writable, file-less memory of a process (heap, stack, anonymous maps): where
 * nginx keeps the copy of its environment it makes before retitling itself. Read as root through /proc/<pid>/mem.
 */
async function inMemory(pid: number, needle: string): Promise<number> {
  const maps = await readFile(`/proc/${pid}/maps`, "utf8");
  const fh = await open(`/proc/${pid}/mem`, "r");
  let hits = 0;
  try {
    for (const line of maps.split("\n")) {
      const [range = "", perms = "", , , , path = ""] = line.trim().split(/\s+/);
      if (!perms.startsWith("rw") || path.startsWith("/") || path === "[vvar]" || path === "[vsyscall]") continue;
      const [lo, hi] = range.split("-").map((h) => Number.parseInt(h, 16));
      if (lo === undefined || hi === undefined || hi - lo > 256 << 20) continue;
      const buf = Buffer.alloc(hi - lo);
      try {
        await fh.read(buf, 0, buf.length, lo);
      } catch {
        continue;
      }
      for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) hits++;
    }
  } finally {
    await fh.close();
  }
  return hits;
}

describe("secrets and the state dir", () => {
  it("nginx's environment and memory hold no controller secret; other users cannot read the state dir", async () => {
    const dir = await tempDir("nginx-lb-secrets-");
    const stateDir = join(dir, "state");
    // What a systemd StateDirectory= or a plain mkdir leaves behind.
    await mkdir(stateDir);
    await chmod(stateDir, 0o755);
    const port = await freePort();
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    await writeFile(backends, JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } } }));
    const etcdPassword = "etcd-pw-Zq81xVv0c3";
    const adminToken = "admin-token-Kd93mPq0aWx7";
    const lb = await startController({
      stateDir,
      services,
      args: ["--backends", backends, "--admin-listen", `127.0.0.1:${await freePort()}`, "--worker-processes", "2"],
      env: {
        NGINX_LB_ETCD_PASSWORD: etcdPassword,
        NGINX_LB_ADMIN_TOKEN: adminToken,
        NGINX_LB_SOME_SETTING: "x",
      },
    });
    await eventually(async () => (await get(`http://127.0.0.1:${port}/`, { host: "a.test" })).status === 200, 15_000);

    const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
    const nginx = [master, ...(await workerPids(master))];
    expect(nginx.length).toBeGreaterThanOrEqual(3);
    for (const pid of nginx) {
      const environ = await readFile(`/proc/${pid}/environ`, "latin1");
      expect(environ).not.toContain(etcdPassword);
      expect(environ).not.toContain(adminToken);
      expect(environ).not.toContain("NGINX_LB_");
      // /proc/<pid>/environ alone proves little (nginx blanks it when it retitles itself): its memory keeps a copy.
      expect(await inMemory(pid, etcdPassword)).toBe(0);
      expect(await inMemory(pid, adminToken)).toBe(0);
      expect(await inMemory(pid, "NGINX_LB_SOME_SETTING")).toBe(0);
    }
    // The scan does find what nginx does hold: the controller's own memory has the token, nginx's has its prefix.
    expect(await inMemory(lb.child.pid!, adminToken)).toBeGreaterThan(0);
    expect(await inMemory(master, stateDir)).toBeGreaterThan(0);

    // As root: 0710, nginx's workers' group passing through to tmp/ (test/faults/worker-user.test.ts).
    expect((await stat(stateDir)).mode & 0o777).toBe(0o710);
    expect(lb.find(/tightened it to 0710/)[0]).toMatchObject({ was: "0755" });
    for (const cmd of [
      ["ls", stateDir],
      ["cat", join(stateDir, "nginx.conf")],
      ["cat", join(stateDir, "state.json")],
    ]) {
      const r = spawnSync(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), ...cmd], { encoding: "utf8" });
      expect(r.status, cmd.join(" ")).not.toBe(0);
      expect(r.stderr, cmd.join(" ")).toMatch(/Permission denied/);
    }
    // As root the same files are there: the refusals above are permissions, not missing files.
    await run("cat", [join(stateDir, "nginx.conf"), join(stateDir, "state.json")]);
    await lb.stop();
  });

  it("--admin-token VALUE is refused with exit 2, naming the file and environment forms", async () => {
    const dir = await tempDir("nginx-lb-admin-flag-");
    const c = cli([
      "run",
      "--services",
      join(dir, "services.json"),
      "--state-dir",
      join(dir, "state"),
      "--admin-token",
      "a-token-on-the-command-line",
    ]);
    expect(await c.exited).toBe(2);
    expect(c.output()).toMatch(/--admin-token: .*visible .* in ps.*--admin-token-file FILE.*NGINX_LB_ADMIN_TOKEN/);
  });

  it("a state dir the controller's user does not own stops the start (exit 1) naming the dir and what to do", async () => {
    const dir = await tempDir("nginx-lb-foreign-dir-");
    await chmod(dir, 0o755);
    const stateDir = join(dir, "state");
    await mkdir(stateDir, { mode: 0o755 });
    await chmod(stateDir, 0o755);
    // A services file nobody can read, so the state dir is the one problem this start meets.
    const services = join(dir, "services.json");
    await writeFile(services, '{"servers":[]}', { mode: 0o644 });
    const r = spawnSync(
      AS_NOBODY[0]!,
      [
        ...AS_NOBODY.slice(1),
        ...[process.execPath, "--import", "tsx", MAIN, "run", "--state-dir", stateDir, "--services", services],
      ],
      {
        encoding: "utf8",
        cwd: new URL("../..", import.meta.url).pathname,
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: "/tmp", NGINX_LB_ADMIN_LISTEN: "off" },
        timeout: 30_000,
      },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${stateDir}: is owned by uid 0`);
    expect(r.stderr).toMatch(/chown it to uid 65534/);
    expect((await stat(stateDir)).mode & 0o777).toBe(0o755);
  });
});
