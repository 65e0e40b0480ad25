/**
 * Fault: the controller dies (SIGKILL; nginx outlives it), its state.json is corrupted, and etcd is down when a new
 * controller starts. The new controller adopts the running nginx and must not serve less than it serves: it waits for
 * the registry (saying so in status) while nginx keeps answering from the right backends, and converges once etcd is
 * back, rewriting state.json. The corrupt file is moved aside, not silently taken for an empty state. Runs the real
 * `nginx-lb run` over a real etcd, in both endpoint modes.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import {
  eventually,
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
  waiting?: string | null;
  registry: { connected: boolean };
}

/** Adds the controller's recent log to a failure: what it did while the check waited. */
function withLog(lb: Controller): (e: unknown) => never {
  return (e) => {
    const tail = lb.lines.slice(-25).map((l) => JSON.stringify(l).slice(0, 600));
    throw new Error(`${String(e)}\ncontroller log:\n${tail.join("\n")}`);
  };
}

describe.each(["reload", "dynamic"] as const)("corrupt state.json with etcd down at restart (%s endpoints)", (mode) => {
  it("nginx keeps serving what it had until the registry answers, then converges; the corrupt file is moved aside", async () => {
    const prefix = `/faults/${mode}/corrupt`;
    const key = (ip: string) => `${prefix}/web-api/ips/${ip}`;
    for (const ip of IPS.slice(0, 2)) await etcd.ctl(["put", key(ip), JSON.stringify({ weight: 1 })]);
    const dir = await tempDir("nginx-lb-corrupt-");
    const [port = 0, adminPort = 0] = await freePorts(2);
    const services = join(dir, "services.json");
    const stateDir = join(dir, "state");
    await writeServices(services, [
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
    ]);
    const args = ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--endpoints-mode", mode].concat([
      "--admin-listen",
      `127.0.0.1:${adminPort}`,
    ]);
    const first = await startController({ stateDir, services, args });
    const url = `http://127.0.0.1:${port}/`;
    const had = "127.0.0.2,127.0.0.3";
    await eventually(async () => (await served(url)).join() === had, 15_000, "initial set");
    await eventually(async () => (await readFile(join(stateDir, "state.json"), "utf8")).includes("127.0.0.3"));

    first.child.kill("SIGKILL");
    await first.exited;
    const garbage = Buffer.from([0x7b, 0x22, 0x76, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]);
    await writeFile(join(stateDir, "state.json"), garbage);
    await etcd.stop();

    const traffic = load(url, { host: "a.test", count: 40_000, concurrency: 2, maxMs: 90_000 });
    const second = await startController({ stateDir, services, args });
    await second.waitFor(/adopted the running nginx master/);
    const corrupt = await second.waitFor(/state.json is unreadable and was moved aside/);
    expect(corrupt["file"]).toBe(join(stateDir, "state.json"));
    const aside = (await readdir(stateDir)).filter((n) => n.startsWith("state.json.corrupt-"));
    expect(aside).toHaveLength(1);
    expect(corrupt["movedTo"]).toBe(join(stateDir, aside[0] ?? ""));
    expect(await readFile(join(stateDir, aside[0] ?? ""))).toEqual(garbage);

    // etcd stays down a while: nothing is applied, nginx answers from what it had, status says why.
    const admin = (path: string) => get(`http://127.0.0.1:${adminPort}${path}`);
    const status = JSON.parse((await admin("/api/status")).body) as Status;
    expect(status.waiting).toBe("waiting for the registry; nginx keeps serving what it had");
    expect(status.registry.connected).toBe(false);
    const readyz = await admin("/readyz");
    expect(readyz.status).toBe(200);
    expect(readyz.body).toContain("waiting for the registry; nginx keeps serving what it had");
    for (let i = 0; i < 3; i++) {
      expect((await served(url)).join()).toBe(had);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(second.applies()).toEqual([]);

    await etcd.start();
    await etcd.ctl(["put", key("127.0.0.4"), JSON.stringify({ weight: 1 })]);
    await eventually(async () => (await served(url)).join() === IPS.join(), 30_000, "served set = registry").catch(
      withLog(second),
    );
    const state = await eventually(async () => {
      const text = await readFile(join(stateDir, "state.json"), "utf8");
      return text.includes("127.0.0.4") ? (JSON.parse(text) as { version: number; backends: object }) : null;
    });
    expect(state.version).toBe(1);
    expect(Object.keys(state.backends)).toContain("web-api");
    expect((JSON.parse((await admin("/api/status")).body) as Status).waiting).toBeNull();
    // The control port and push token outlived state.json: the adopted nginx took pushes without a reload.
    if (mode === "dynamic") expect(second.applies().map((l) => l["action"])).not.toContain("reload");

    await traffic.stop();
    expect(traffic.done).toBeGreaterThan(100);
    expect(traffic.failures).toEqual([]);
    await second.stop();
  });
});
