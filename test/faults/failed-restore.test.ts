/**
 * Fault: a routing change nginx cannot take (its port is held), and the restore of the last good nginx.conf fails
 * too (the file made immutable with chattr right after the swap, as a read-only or broken state dir would). The apply
 * must be recorded as failed with both reasons, nginx must keep serving the config it runs, and once the file can be
 * written again and the port is free the controller must recover by itself: a restarted nginx master then comes up on
 * a config nginx can take. Runs the real `nginx-lb run` in both endpoint modes.
 */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { load } from "../helpers/load.js";
import { cleanupNginx, freePorts, tempDir } from "../helpers/nginx.js";
import { sleep } from "../helpers/wait.js";

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await cleanupNginx();
});

const chattr = (flag: "+i" | "-i", file: string) => execFileSync("chattr", [flag, file]);
const server = (port: number) => ({
  domain_name: "a.test",
  frontend_port: port,
  routes: { "/": { app: "web", service: "api", port: pool.port } },
});

function hold(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

describe.each(["reload", "dynamic"] as const)("a failed restore of the last good nginx.conf (%s endpoints)", (mode) => {
  it("is recorded with its reason while nginx keeps serving, and heals once the file and the port are free", async () => {
    const dir = await tempDir("nginx-lb-restore-");
    const [p1 = 0, p2 = 0, adminPort = 0] = await freePorts(3);
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    const stateDir = join(dir, "state");
    const conf = join(stateDir, "nginx.conf");
    await writeServices(services, [server(p1)]);
    await writeFile(backends, JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } } }));
    const lb = await startController({
      stateDir,
      services,
      args: ["--backends", backends, "--endpoints-mode", mode, "--admin-listen", `127.0.0.1:${adminPort}`],
    });
    const site = (port: number) => get(`http://127.0.0.1:${port}/`, { host: "a.test", timeoutMs: 3000 });
    await eventually(async () => (await site(p1)).status === 200, 15_000, "the first port served");
    const traffic = load(`http://127.0.0.1:${p1}/`, { host: "a.test", count: 3000, concurrency: 2, maxMs: 40_000 });

    const squatter = await hold(p2);
    let locked = false;
    try {
      await writeServices(services, [server(p1), server(p2)]);
      lb.signal("SIGUSR2");
      // The candidate is swapped in, then nginx tries to bind for a few seconds: lock the file before the restore.
      await eventually(async () => (await readFile(conf, "utf8")).includes(`:${p2}`), 15_000, "the swap");
      chattr("+i", conf);
      locked = true;
      const failed = await lb.waitFor(/restoring the last good nginx.conf failed too/, 20_000);
      expect(JSON.stringify(failed)).toMatch(/Operation not permitted|EPERM/);
      const status = (await get(`http://127.0.0.1:${adminPort}/api/status`)).json<{
        applies: { result: string; error?: string }[];
      }>();
      expect(status.applies.some((a) => a.result === "failed" && /restoring the last good/.test(a.error ?? ""))).toBe(
        true,
      );
      // nginx never took the change: the routes it runs keep answering.
      expect((await site(p1)).json<Echo>().backend).toBe("127.0.0.2");
      await sleep(500);
    } finally {
      if (locked) chattr("-i", conf);
      await new Promise<void>((r) => squatter.close(() => r()));
    }

    // Healed by itself: the pending change applies once the port is free, and what is on disk is what nginx runs.
    await eventually(async () => (await site(p2).catch(() => null))?.status === 200, 40_000, "the second port served");
    const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
    process.kill(master, "SIGKILL");
    await eventually(
      async () => {
        const pid = Number((await readFile(join(stateDir, "nginx.pid"), "utf8").catch(() => "0")).trim());
        if (pid === master || pid === 0) return false;
        const [a, b] = await Promise.all([site(p1).catch(() => null), site(p2).catch(() => null)]);
        return a?.status === 200 && b?.status === 200;
      },
      20_000,
      "a restarted master serving both ports from the file on disk",
    );
    await traffic.stop();
    // Only the master SIGKILL at the end may cost requests (refused while no master listens), never a 5xx.
    expect(traffic.failures.filter((f) => f.startsWith("status"))).toEqual([]);
    await lb.stop();
  });
});
