import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, readdir, readFile, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { workerPids } from "../../src/nginx/process.js";
import { bulkBytes, startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, sleep, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

/**
 * Issue 11.8/11.10 follow-up against the real `nginx-lb run` (as root, as in production): nginx's workers run as a
 * dedicated user (www-data), not as nobody, and can use their temp dir inside the closed state dir, so bodies larger
 * than nginx's memory buffers pass whole; other users (nobody) still cannot enter the state dir.
 */

const RESPONSE_BYTES = 5 * 1024 * 1024;
/** Just under nginx's default client_max_body_size (1m); anything above its 16k memory buffer goes to a temp file. */
const REQUEST_BYTES = 1_000_000;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const as = (user: string, group: string) => ["setpriv", "--reuid", user, "--regid", group, "--clear-groups"];
function runAs(who: string[], cmd: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(who[0] ?? "", [...who.slice(1), ...cmd], { encoding: "utf8", timeout: 10_000 });
  return { status: r.status, stderr: r.stderr };
}

/** The uid of a user in /etc/passwd, or null when there is none. */
async function uidOf(name: string): Promise<number | null> {
  const line = (await readFile("/etc/passwd", "utf8")).split("\n").find((l) => l.startsWith(`${name}:`));
  return line === undefined ? null : Number(line.split(":")[2]);
}

/**
 * One request through nginx, with the raw response bytes. The reader waits before reading, so the response backs up
 * into nginx's temp file (what a slow client does) rather than fitting in the socket buffers.
 */
function fetchBytes(
  port: number,
  host: string,
  path: string,
  body?: Buffer,
): Promise<{ status: number; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: body ? "POST" : "GET",
        headers: { host, ...(body ? { "content-length": String(body.length) } : {}) },
        agent: false,
      },
      (res) => {
        res.pause();
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(chunks) }));
        res.on("error", reject);
        setTimeout(() => res.resume(), 500);
      },
    );
    req.setTimeout(20_000, () => req.destroy(new Error(`timeout: ${path}`)));
    req.on("error", reject);
    req.end(body);
  });
}

let pool: BackendPool;
let wwwData: number | null;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
  wwwData = await uidOf("www-data");
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

describe.each(["dynamic", "reload"])("nginx's workers as a dedicated user (%s endpoints)", (mode) => {
  it("large bodies pass whole, workers run as www-data, nobody cannot enter the state dir", async () => {
    expect(process.getuid?.(), "these tests run as root, as nginx-lb does in production").toBe(0);
    const dir = await tempDir("nginx-lb-worker-user-");
    // As /var/lib is: the workers must pass through the parents to reach their temp dir inside the state dir.
    await chmod(dir, 0o755);
    const stateDir = join(dir, "state");
    const port = await freePort();
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    await writeFile(backends, JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } } }));
    const lb = await startController({ stateDir, services, args: ["--backends", backends, "--endpoints-mode", mode] });
    await eventually(async () => (await get(`http://127.0.0.1:${port}/`, { host: "a.test" })).status === 200, 15_000);
    expect(lb.find(/cannot pass through|sharing a uid/)).toEqual([]);

    // (i) A response and a request body larger than nginx's memory buffers, whole (count and hash).
    const expected = bulkBytes(RESPONSE_BYTES);
    const down = await fetchBytes(port, "a.test", `/nginx-lb-test/bytes/${RESPONSE_BYTES}`);
    expect(down.status).toBe(200);
    expect(down.bytes.length).toBe(RESPONSE_BYTES);
    expect(sha256(down.bytes)).toBe(sha256(expected));
    const sent = bulkBytes(REQUEST_BYTES).reverse();
    const up = await fetchBytes(port, "a.test", "/nginx-lb-test/digest", sent);
    expect(up.status).toBe(200);
    expect(JSON.parse(up.bytes.toString("utf8"))).toEqual({ bytes: REQUEST_BYTES, sha256: sha256(sent) });
    // Both went through the workers' temp files (what failed with workers as nobody), and nginx reported no failure.
    const errorLog = await eventually(async () => {
      const text = await readFile(join(stateDir, "logs/error.log"), "utf8");
      return /client request body is buffered to a temporary file/.test(text) &&
        /upstream response is buffered to a temporary file/.test(text)
        ? text
        : null;
    }, 5_000);
    // (A failed worker_rlimit_nofile is an [alert] in a container with a low hard limit: not what this is about.)
    expect(errorLog).not.toMatch(/\[crit\]|\(13: Permission denied\)/);

    // (ii) The workers run as www-data, named in nginx.conf with its group.
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    if (wwwData !== null) {
      expect(conf).toMatch(/^user www-data www-data;$/m);
      const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
      const workers = await workerPids(master);
      expect(workers.length).toBeGreaterThan(0);
      for (const w of workers) {
        const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(await readFile(`/proc/${w}/status`, "utf8"));
        expect(uids?.slice(1).map(Number), `worker ${w}`).toEqual([wwwData, wwwData, wwwData, wwwData]);
      }
    }

    // The layout: the dir passes the workers' group through, tmp/ is theirs, the rest is the controller's alone.
    const st = await stat(stateDir);
    expect([st.uid, st.mode & 0o777]).toEqual([0, 0o710]);
    const tmp = await stat(join(stateDir, "tmp"));
    expect([tmp.uid, tmp.mode & 0o777]).toEqual([wwwData ?? 65534, 0o700]);
    const files = ["nginx.conf", "state.json", ...(mode === "dynamic" ? ["endpoints.sets"] : [])];
    const lua = mode === "dynamic" ? (await readdir(join(stateDir, "lua"))).map((f) => `lua/${f}`) : [];
    for (const f of [...files, ...lua]) expect((await stat(join(stateDir, f))).mode & 0o777, f).toBe(0o600);
    for (const d of ["logs", "tls", ...(mode === "dynamic" ? ["lua"] : [])])
      expect((await stat(join(stateDir, d))).mode & 0o777, d).toBe(0o700);

    // (iii) nobody gets nothing; the workers' own user passes through to tmp/ only.
    const nobody = as("nobody", "nogroup");
    for (const cmd of [
      ["ls", stateDir],
      ["cat", join(stateDir, "nginx.conf")],
      ["cat", join(stateDir, "state.json")],
      ["ls", join(stateDir, "tmp")],
    ]) {
      const r = runAs(nobody, cmd);
      expect(r.status, `nobody: ${cmd.join(" ")}`).not.toBe(0);
      expect(r.stderr, `nobody: ${cmd.join(" ")}`).toMatch(/Permission denied/);
    }
    if (wwwData !== null) {
      const worker = as("www-data", "www-data");
      for (const cmd of [
        ["ls", stateDir],
        ["cat", join(stateDir, "nginx.conf")],
        ["cat", join(stateDir, "state.json")],
      ])
        expect(runAs(worker, cmd).status, `www-data: ${cmd.join(" ")}`).not.toBe(0);
      expect(runAs(worker, ["ls", join(stateDir, "tmp")]).status).toBe(0);
    }
    await lb.stop();
  });
});

describe("--nginx-user", () => {
  it("a user that does not exist stops the start (exit 1), naming the flag", async () => {
    const dir = await tempDir("nginx-lb-nginx-user-");
    const c = cli([
      "run",
      "--services",
      join(dir, "services.json"),
      "--state-dir",
      join(dir, "state"),
      "--nginx-user",
      "nosuchuser",
    ]);
    const code = await Promise.race([c.exited, sleep(30_000).then(() => "timeout")]);
    expect(code).toBe(1);
    expect(c.output()).toMatch(/--nginx-user: no user "nosuchuser" in \/etc\/passwd/);
  });
});
