/**
 * Fault: the controller is SIGKILLed in the middle of a burst of registry changes, and the burst goes on while it is
 * dead. nginx must keep serving throughout (it outlives its controller), and the restarted controller must adopt it and
 * converge on the registry as it is now, not as it was when the old controller died.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { served } from "../helpers/served.js";
import { load } from "../helpers/load.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
let pool: BackendPool;
let etcd: EtcdServer;
beforeAll(async () => {
  [pool, etcd] = await Promise.all([startBackends(IPS), startEtcd()]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

function masters(stateDir: string): number {
  const out = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.startsWith("nginx: master") && l.includes(stateDir)).length;
}

describe.each(["reload", "dynamic"] as const)("controller SIGKILL mid-burst (%s endpoints)", (mode) => {
  it("nginx serves throughout (0 failed requests); the restarted controller converges on the registry", async () => {
    const prefix = `/faults/${mode}/ckill`;
    const key = (ip: string) => `${prefix}/web-api/ips/${ip}`;
    for (const ip of IPS.slice(0, 2)) await etcd.ctl(["put", key(ip), JSON.stringify({ weight: 1 })]);
    const dir = await tempDir("nginx-lb-ckill-");
    const port = await freePort();
    const services = join(dir, "services.json");
    const stateDir = join(dir, "state");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    const args = ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--endpoints-mode", mode];
    const first = await startController({ stateDir, services, args });
    const url = `http://127.0.0.1:${port}/`;
    await eventually(
      async () => (await served(url, { n: 12 })).join() === IPS.slice(0, 2).join(),
      15_000,
      "initial set",
    );

    // Every endpoint the burst touches stays live, so any failed request is the fault's doing.
    const traffic = load(url, { host: "a.test", count: 4000, concurrency: 4, maxMs: 30_000 });
    const burst = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const ip = IPS[i % IPS.length] ?? "";
        await etcd.ctl(["put", key(ip), JSON.stringify({ weight: 1 + (i % 5) })]);
      }
    };
    await burst(0, 10);
    first.child.kill("SIGKILL");
    await first.exited;
    // While no controller runs: the registry moves on (one endpoint added, one removed).
    await burst(10, 20);
    await etcd.ctl(["del", key("127.0.0.2")]);
    const second = await startController({ stateDir, services, args });
    await second.waitFor(/adopted the running nginx master/);
    const want = ["127.0.0.3", "127.0.0.4", "127.0.0.5"];
    await eventually(async () => (await served(url)).join() === want.join(), 15_000, "served set = registry");
    await traffic.stop();
    expect(traffic.done).toBeGreaterThan(100);
    expect(traffic.failures).toEqual([]);
    expect(masters(stateDir)).toBe(1);
    await second.stop();
  });
});
