import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

/**
 * Issue 11.5, the stray form: an nginx master of our state dir runs but no pid file names it (a controller was
 * SIGKILLed and the pid file deleted). A new `nginx-lb run` must retire it (it holds the ports) and serve, and leave
 * the nginx of any other state dir alone.
 */

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

/** Pids of nginx masters whose command line names the state dir. */
function masters(stateDir: string): number[] {
  const out = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => /^\s*(\d+)\s+(.*)$/.exec(l))
    .filter(
      (m): m is RegExpExecArray => m !== null && m[2]!.startsWith("nginx: master") && m[2]!.includes(`${stateDir}/`),
    )
    .map((m) => Number(m[1]));
}

async function site(name: string, endpoints: Record<string, { weight: number }>) {
  const dir = await tempDir(`nginx-lb-stray-${name}-`);
  const port = await freePort();
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(services, [
    { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
  ]);
  await writeFile(backends, JSON.stringify({ "web-api": endpoints }));
  const start = () => startController({ stateDir: join(dir, "state"), services, args: ["--backends", backends] });
  return { stateDir: join(dir, "state"), url: `http://127.0.0.1:${port}/`, backends, start };
}

async function served(url: string, n: number): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add((await get(url, { host: "a.test" })).json<Echo>().backend);
  return [...seen].sort();
}

describe("a stray nginx master of our state dir", () => {
  it("is retired by the next controller, which then serves the registry; another dir's nginx is untouched", async () => {
    const other = await site("other", { "127.0.0.3": { weight: 1 } });
    const otherLb = await other.start();
    await eventually(async () => (await served(other.url, 4)).join() === "127.0.0.3", 15_000, "the other site");
    const otherMaster = masters(other.stateDir);
    expect(otherMaster).toHaveLength(1);

    const s = await site("ours", { "127.0.0.2": { weight: 1 } });
    const first = await s.start();
    await eventually(async () => (await served(s.url, 4)).join() === "127.0.0.2", 15_000, "our site");
    const stray = Number((await readFile(join(s.stateDir, "nginx.pid"), "utf8")).trim());
    first.signal("SIGKILL");
    await first.exited;
    await rm(join(s.stateDir, "nginx.pid"));
    // Still serving, but nothing names it: a new controller cannot adopt it and its ports are taken.
    expect(alive(stray)).toBe(true);
    expect(await served(s.url, 2)).toEqual(["127.0.0.2"]);

    await writeFile(
      s.backends,
      JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } }),
    );
    const lb = await s.start();
    const retired = await lb.waitFor(/retired nginx processes of this state dir/);
    const orphans = retired["orphans"] as { pid: number; role: string; why: string }[];
    expect(orphans.filter((o) => o.role === "master").map((o) => o.pid)).toEqual([stray]);
    await eventually(async () => (await served(s.url, 20)).join() === "127.0.0.2,127.0.0.3", 15_000, "the registry");
    expect(alive(stray)).toBe(false);
    const now = masters(s.stateDir);
    expect(now).toHaveLength(1);
    expect(now[0]).not.toBe(stray);

    // The other state dir's nginx kept running and serving throughout.
    expect(masters(other.stateDir)).toEqual(otherMaster);
    expect(await served(other.url, 4)).toEqual(["127.0.0.3"]);
    expect(orphans.map((o) => o.pid)).not.toContain(otherMaster[0]);

    await lb.stop();
    expect(masters(s.stateDir)).toEqual([]);
    await otherLb.stop();
    expect(masters(other.stateDir)).toEqual([]);
  });

  it("a pid file naming another state dir's master (its pid reused) is not adopted, and that master is untouched", async () => {
    const other = await site("foreign", { "127.0.0.3": { weight: 1 } });
    const otherLb = await other.start();
    await eventually(async () => (await served(other.url, 4)).join() === "127.0.0.3", 15_000, "the other site");
    const [foreign] = masters(other.stateDir);
    expect(foreign).toBeGreaterThan(1);

    // Our nginx was SIGKILLed and its pid reused by another state dir's master: the pid file names that one now.
    const s = await site("reused", { "127.0.0.2": { weight: 1 } });
    await mkdir(s.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(join(s.stateDir, "nginx.pid"), `${foreign}\n`);
    const lb = await s.start();
    await lb.waitFor(/names an nginx master of another state dir: not adopted/);
    await eventually(async () => (await served(s.url, 4)).join() === "127.0.0.2", 15_000, "our own nginx");
    expect(lb.find(/adopted the running nginx master/)).toEqual([]);
    expect(masters(s.stateDir)).toHaveLength(1);
    expect(masters(s.stateDir)).not.toContain(foreign);

    // Stopping ours never signals the foreign master: it kept serving its own site throughout.
    await lb.stop();
    expect(masters(s.stateDir)).toEqual([]);
    expect(alive(foreign ?? 0)).toBe(true);
    expect(masters(other.stateDir)).toEqual([foreign]);
    expect(await served(other.url, 4)).toEqual(["127.0.0.3"]);
    await otherLb.stop();
  });
});
