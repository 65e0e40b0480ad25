import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { workerPids } from "../../src/nginx/process.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, sleep, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { served } from "../helpers/served.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

/**
 * Issue 11.5 against the real `nginx-lb run`: the nginx master is SIGKILLed under load while its workers linger on
 * the listening sockets. The controller must retire those orphans (and say so), start a new master that owns the
 * ports, and serve the registry's set, in both endpoint modes.
 */

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

/**
 * Requests that may fail (refused, reset, or not 200) across one master crash, per mode, and the span of time they
 * fall in. The ports are closed from the orphans' SIGQUIT until the new master binds (in dynamic mode, until its
 * first push: issue 11.7); at this loop's pace (4 loops, a new connection per request, a refusal returns at once)
 * that is roughly one failure per millisecond. Observed on a busy 2-core machine: 28 to 204 failures within 29 to
 * 390 ms. A controller that cannot free the ports fails every request for seconds and breaks both bounds.
 */
const MAX_FAILED = 400;
const MAX_OUTAGE_MS = 2000;

/** A live process: present and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe later). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

/** Pids that hold a listening socket on the port (from `ss`, which names every process sharing the socket). */
function listeners(port: number): number[] {
  const out = execFileSync("ss", ["-Hltnp", `sport = :${port}`], { encoding: "utf8" });
  return [...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
}

/** A bounded request loop (count and time): plain node http, a new connection per request, every failure kept. */
function load(url: string, opts: { count: number; concurrency: number; maxMs: number }) {
  const failures: string[] = [];
  const failedAt: number[] = [];
  let done = 0;
  const deadline = Date.now() + opts.maxMs;
  const worker = async () => {
    while (done < opts.count && Date.now() < deadline) {
      done++;
      try {
        const r = await get(url, { host: "a.test", timeoutMs: 5000 });
        if (r.status !== 200) {
          failures.push(`status ${r.status}`);
          failedAt.push(Date.now());
        }
      } catch (e) {
        failures.push((e as Error).message);
        failedAt.push(Date.now());
      }
      // Spread the requests over the crash instead of finishing them before it.
      await sleep(2);
    }
  };
  const finished = Promise.all(Array.from({ length: opts.concurrency }, worker));
  const window = () => (failedAt.length > 0 ? Math.max(...failedAt) - Math.min(...failedAt) : 0);
  return { failures, finished, done: () => done, window };
}

describe.each(["reload", "dynamic"] as const)("nginx master SIGKILLed under load (%s endpoints)", (mode) => {
  it("retires the lingering workers, starts a master that owns the ports, serves the registry", async () => {
    const dir = await tempDir(`nginx-lb-master-kill-${mode}-`);
    const stateDir = join(dir, "state");
    const port = await freePort();
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    const registry = { "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } };
    await writeFile(backends, JSON.stringify(registry));
    const lb = await startController({
      stateDir,
      services,
      args: ["--backends", backends, "--endpoints-mode", mode, "--worker-processes", "2"],
    });
    const url = `http://127.0.0.1:${port}/`;
    await eventually(
      async () => (await served(url, { n: 20 })).join() === "127.0.0.2,127.0.0.3",
      15_000,
      "both backends",
    );

    const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
    const workers = await workerPids(master);
    expect(workers).toHaveLength(2);
    const traffic = load(url, { count: 2000, concurrency: 4, maxMs: 20_000 });
    await sleep(500);
    process.kill(master, "SIGKILL");
    // Nothing ends an nginx worker when its master dies: they linger, serving the old config on the old sockets.
    expect(workers.every(alive)).toBe(true);

    const retired = await lb.waitFor(/retired nginx processes of this state dir/);
    const orphans = retired["orphans"] as { pid: number; role: string; why: string }[];
    expect(orphans.filter((o) => o.role === "worker").map((o) => o.pid)).toEqual(workers);
    await eventually(async () => lb.find(/^started nginx$/).length >= 2, 15_000, "a new nginx master");
    await traffic.finished;

    const newMaster = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
    expect(newMaster).not.toBe(master);
    expect(workers.filter(alive)).toEqual([]);
    const owners = new Set([newMaster, ...(await workerPids(newMaster))]);
    const holding = listeners(port);
    expect(holding.length).toBeGreaterThan(0);
    expect(holding.filter((pid) => !owners.has(pid))).toEqual([]);

    console.log(
      `nginx master SIGKILL (${mode}): ${traffic.failures.length} of ${traffic.done()} requests failed ` +
        `within ${traffic.window()} ms` +
        (traffic.failures.length > 0 ? ` (first: ${traffic.failures[0]})` : ""),
    );
    expect(traffic.done()).toBeGreaterThanOrEqual(500);
    expect(traffic.failures.length).toBeLessThanOrEqual(MAX_FAILED);
    // Refused connections while no master listens are the crash's cost; an answer is never a 5xx: the new master
    // starts with the last known sets (dynamic mode: endpoints.sets), not empty ones.
    expect(traffic.failures.filter((f) => f.startsWith("status"))).toEqual([]);
    expect(traffic.window()).toBeLessThanOrEqual(MAX_OUTAGE_MS);

    // The served set equals the registry, and the new master follows it.
    expect(await served(url, { n: 20 })).toEqual(["127.0.0.2", "127.0.0.3"]);
    await writeFile(backends, JSON.stringify({ "web-api": { "127.0.0.4": { weight: 1 } } }));
    await eventually(async () => (await served(url, { n: 10 })).join() === "127.0.0.4", 15_000, "the changed registry");
    await lb.stop();
    expect(alive(newMaster)).toBe(false);
  });
});
