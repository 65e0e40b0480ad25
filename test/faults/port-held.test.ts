/**
 * Fault: a valid routing change adds a server on a port another process holds. nginx cannot take it; the change must
 * stay pending (status, metrics, one log line), endpoint changes must keep reaching nginx on the routes in force, and
 * once the port is free the new server must serve by itself (no SIGHUP), all without a failed request on the routes
 * in force. Runs the real `nginx-lb run` over a real etcd, in both endpoint modes and both routes modes.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import {
  eventually,
  sleep,
  startController,
  stopAllControllers,
  writeServices,
  type Controller,
} from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { get } from "../helpers/http.js";
import { served } from "../helpers/served.js";
import { load } from "../helpers/load.js";
import { cleanupNginx, freePorts, tempDir } from "../helpers/nginx.js";

const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
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

interface Status {
  ready: { ready: boolean; why: string };
  services: { pending?: { since: string; error: string; nextRetryAt: string } };
  applies: { result: string; action: string; reason: string; error?: string }[];
}

let lastSeen = "";
/** The backends that answered over `n` requests to `host` on `port`. */
async function servedOn(port: number, host: string, n?: number): Promise<string[]> {
  const seen = await served(`http://127.0.0.1:${port}/`, { host, ...(n !== undefined ? { n } : {}) });
  lastSeen = `${new Date().toISOString()} ${seen.join()}`;
  return seen;
}

function hold(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

/** Adds the controller's recent log to a failure: what it did while the check waited. */
function withLog(lb: Controller, stateDir: string): (e: unknown) => never {
  return (e) => {
    const tail = lb.lines.slice(-25).map((l) => JSON.stringify(l).slice(0, 600));
    let nginxLog = "";
    try {
      nginxLog = readFileSync(join(stateDir, "logs/error.log"), "utf8").split("\n").slice(-30).join("\n");
    } catch {
      nginxLog = "(none)";
    }
    throw new Error(
      `${String(e)}\nlast seen: ${lastSeen}\ncontroller log:\n${tail.join("\n")}\nnginx error log:\n${nginxLog}`,
    );
  };
}

// Routes rendered (reload) in both endpoint modes, and pushed (the default with dynamic endpoints): a new port reloads
// in every mode, so each must keep the change pending and heal.
describe.each([
  ["reload", "reload"],
  ["dynamic", "reload"],
  ["dynamic", "dynamic"],
] as const)("a routing change on a held port (%s endpoints, %s routes)", (mode, routesMode) => {
  it("stays pending while endpoint changes apply on the routes in force, and heals by itself once the port is free", async () => {
    const prefix = `/faults/${mode}-${routesMode}/held`;
    const key = (ip: string) => `${prefix}/web-api/ips/${ip}`;
    for (const ip of IPS.slice(0, 2)) await etcd.ctl(["put", key(ip), JSON.stringify({ weight: 1 })]);
    const dir = await tempDir("nginx-lb-held-");
    const [p1 = 0, p2 = 0, adminPort = 0] = await freePorts(3);
    const services = join(dir, "services.json");
    const route = { "/": { app: "web", service: "api", port: pool.port } };
    await writeServices(services, [{ domain_name: "a.test", frontend_port: p1, routes: route }]);
    const stateDir = join(dir, "state");
    const lb = await startController({
      stateDir,
      services,
      args: ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--endpoints-mode", mode]
        .concat(["--routes-mode", routesMode])
        .concat(["--admin-listen", `127.0.0.1:${adminPort}`])
        .concat(["--no-watch"]),
    });
    const admin = (path: string) => get(`http://127.0.0.1:${adminPort}${path}`);
    const status = async () => JSON.parse((await admin("/api/status")).body) as Status;
    await eventually(async () => (await servedOn(p1, "a.test")).join() === "127.0.0.2,127.0.0.3", 15_000, "set");

    const traffic = load(`http://127.0.0.1:${p1}/`, { host: "a.test", count: 60_000, concurrency: 2, maxMs: 90_000 });
    const holder = await hold(p2);
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: p1, routes: route },
      { domain_name: "b.test", frontend_port: p2, routes: route },
    ]);
    lb.signal("SIGUSR2");
    const pending = await eventually(async () => (await status()).services.pending, 15_000, "pending in status").catch(
      withLog(lb, stateDir),
    );
    expect(pending.error).toContain(`127.0.0.1:${p2}`);
    expect((await admin("/readyz")).status).toBe(200);
    expect((await admin("/metrics")).body).toMatch(/^nginx_lb_services_pending 1$/m);

    // Endpoint changes reach nginx on the routes in force while the routing change waits.
    const t0 = Date.now();
    await etcd.ctl(["put", key("127.0.0.4"), JSON.stringify({ weight: 1 })]);
    await etcd.ctl(["del", key("127.0.0.2")]);
    await eventually(
      async () => (await servedOn(p1, "a.test")).join() === "127.0.0.3,127.0.0.4",
      10_000,
      "set = registry",
    );
    const converged = Date.now() - t0;
    // Held through a few retries (1 s, 2 s, 4 s ...): still pending, and endpoint changes still apply.
    await sleep(6000);
    const t2 = Date.now();
    await etcd.ctl(["put", key("127.0.0.2"), JSON.stringify({ weight: 1 })]);
    await eventually(
      async () => (await servedOn(p1, "a.test")).join() === IPS.join(),
      10_000,
      "set = registry again",
    ).catch(withLog(lb, stateDir));
    const convergedLater = Date.now() - t2;
    await etcd.ctl(["del", key("127.0.0.2")]);
    await eventually(
      async () => (await servedOn(p1, "a.test")).join() === "127.0.0.3,127.0.0.4",
      10_000,
      "set = registry",
    );
    expect((await status()).services.pending?.error).toContain(`127.0.0.1:${p2}`);

    // The port comes free: the next retry (backoff at most 30 s) takes the change, without SIGHUP.
    await new Promise<void>((r) => holder.close(() => r()));
    const t1 = Date.now();
    await eventually(
      async () => (await servedOn(p2, "b.test", 6)).join() === "127.0.0.3,127.0.0.4",
      45_000,
      "b.test",
    ).catch(withLog(lb, stateDir));
    const healed = Date.now() - t1;
    // The status follows once the apply is confirmed (old workers may linger on keepalive connections a while).
    await eventually(async () => (await status()).services.pending === undefined, 10_000, "pending cleared").catch(
      withLog(lb, stateDir),
    );
    expect((await admin("/metrics")).body).toMatch(/^nginx_lb_services_pending 0$/m);
    expect(lb.find(/SIGHUP/)).toEqual([]);
    // Refused on every retry, with the same error (times and pids aside): one log line.
    expect(lb.find(/^apply failed: nginx refused the new routes/)).toHaveLength(1);
    expect(lb.find(/the pending routing change is in force now/)).toHaveLength(1);
    await traffic.stop();
    expect(traffic.done).toBeGreaterThan(100);
    expect(traffic.failures).toEqual([]);
    console.info(
      `${mode} endpoints, ${routesMode} routes: endpoints converged in ${converged} ms, later ${convergedLater} ms, while pending; healed ${healed} ms after the port was freed; ${traffic.done} requests`,
    );
    await lb.stop();
    // Its own waits are each bounded (the heal's by the retry backoff's 30 s ceiling): a budget above their sum, so a
    // slow step fails at that step's check, with the controller's log, rather than as a bare test timeout.
  }, 150_000);
});

describe("the saved control port held by another process at a restart", () => {
  it("moves it when no nginx of the state dir runs, and serves every site", async () => {
    const prefix = "/faults/held-control";
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, JSON.stringify({ weight: 1 })]);
    const dir = await tempDir("nginx-lb-held-control-");
    const [port = 0] = await freePorts(1);
    const services = join(dir, "services.json");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    const stateDir = join(dir, "state");
    const start = () =>
      startController({ stateDir, services, args: ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix] });
    const controlPort = () =>
      (JSON.parse(readFileSync(join(stateDir, "control.json"), "utf8")) as { controlPort: number }).controlPort;
    const first = await start();
    await eventually(async () => (await servedOn(port, "a.test")).join() === "127.0.0.2", 15_000, "the first run");
    const saved = controlPort();
    await first.stop();
    // After the stop (nginx stopped with it), another process takes the port control.json names.
    const holder = await hold(saved);
    try {
      const again = await start();
      await again.waitFor(/another process holds the saved control port/);
      await eventually(async () => (await servedOn(port, "a.test")).join() === "127.0.0.2", 15_000, "the restart");
      expect(controlPort()).not.toBe(saved);
      await again.stop();
    } finally {
      holder.close();
    }
  });
});
