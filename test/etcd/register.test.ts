/**
 * `nginx-lb register` / `deregister` as an operator runs them, against a real etcd: the key appears and the endpoint
 * source reads it back; SIGTERM deletes it at once; after kill -9 it vanishes when the lease TTL runs out; deleted by
 * someone else, it is put back on its lease; without an etcd endpoint it refuses to start.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";
import { cli, memoryLogger, run } from "../helpers/sources.js";
import { etcdV3Source } from "../../src/sources/etcd-v3.js";

const P = "/lb/backends";

describe("register / deregister", () => {
  let etcd: EtcdServer;
  const children: ChildProcess[] = [];
  const get = async (key: string, api: 2 | 3 = 3) => {
    const r = await etcd.ctl(api === 2 ? ["get", key] : ["get", key, "--print-value-only"], { api, allowFail: true });
    return r.code === 0 ? r.stdout.trim() : "";
  };
  const registrar = (args: string[]) => {
    const c = cli(["register", "--etcd-endpoints", etcd.endpoint, ...args]);
    children.push(c.child);
    return c;
  };
  beforeAll(async () => {
    etcd = await startEtcd({ v2: true });
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await etcd?.destroy();
  });

  test("the key appears, the endpoint source reads it, SIGTERM deletes it", async () => {
    const key = `${P}/shop-web/ips/10.5.0.1`;
    const { logger } = memoryLogger();
    const src = run(etcdV3Source({ etcdUrls: [etcd.endpoint], prefix: P, logger }));
    const r = registrar(["--app", "shop", "--service", "web", "--ip", "10.5.0.1", "--weight", "7"]);
    try {
      await src.waitFor("registered endpoint", (s) => s.value["shop-web"]?.["10.5.0.1"]?.weight === 7);
      expect(await get(key)).toBe('{"weight":7}');
      r.child.kill("SIGTERM");
      expect(await r.exited).toBe(0);
      // Deleted by the revoke at once, not by the 30 s default TTL.
      await src.waitFor("endpoint gone", (s) => s.value["shop-web"] === undefined, 5_000);
      expect(await get(key)).toBe("");
    } finally {
      await src.stop();
    }
  });

  test("kill -9 the registrar: the key stays until the TTL runs out, then vanishes", async () => {
    const key = `${P}/shop-api/ips/10.5.0.2`;
    const r = registrar(["--app", "shop", "--service", "api", "--ip", "10.5.0.2", "--ttl", "3"]);
    await waitFor("key registered", async () => (await get(key)) !== "");
    // Renewed while running: still there after more than one TTL.
    await new Promise((res) => setTimeout(res, 4_000));
    expect(await get(key)).toBe('{"weight":50}');
    r.child.kill("SIGKILL");
    const killedAt = Date.now();
    expect(await get(key)).not.toBe("");
    await waitFor("key expired", async () => (await get(key)) === "", 15_000, 200);
    expect(Date.now() - killedAt).toBeLessThan(10_000);
  });

  test("v2 (etcdctl set layout): registered with a TTL, deleted on SIGTERM", async () => {
    const key = `${P}/old-web/ips/10.5.0.3`;
    const r = registrar(["--etcd-api", "v2", "--app", "old", "--service", "web", "--ip", "10.5.0.3", "--ttl", "3"]);
    await waitFor("v2 key registered", async () => (await get(key, 2)) === '{"weight":50}');
    await new Promise((res) => setTimeout(res, 4_000));
    expect(await get(key, 2)).toBe('{"weight":50}');
    r.child.kill("SIGTERM");
    expect(await r.exited).toBe(0);
    expect(await get(key, 2)).toBe("");
  });

  test("invalid input is refused with the reason, nothing is written", async () => {
    const bad = registrar(["--app", "shop", "--service", "web", "--ip", "shop.example.com", "--weight", "5000"]);
    expect(await bad.exited).toBe(1);
    expect(bad.output()).toContain("is not a literal IPv4 or IPv6 address");
    expect(bad.output()).toContain("--weight: must be an integer from 0 to 1000");
    const r = await etcd.ctl(["get", `${P}/`, "--prefix", "--keys-only"]);
    expect(r.stdout).not.toContain("shop.example.com");
  });

  test("v3: a key deleted by someone else is back on its lease within 2 s, said once per delete; SIGTERM still deletes it", async () => {
    const key = `${P}/shop-cart/ips/10.5.0.5`;
    const r = registrar(["--app", "shop", "--service", "cart", "--ip", "10.5.0.5", "--ttl", "5"]);
    await waitFor("key registered", async () => (await get(key)) !== "");
    const said = () =>
      r
        .output()
        .split("\n")
        .filter((l) => l.includes("the key was deleted by someone else")).length;
    const lease = async () => {
      const kvs = (JSON.parse((await etcd.ctl(["get", key, "-w", "json"])).stdout) as { kvs?: { lease?: number }[] })
        .kvs;
      return kvs?.[0]?.lease ?? 0;
    };
    const ours = await lease();
    expect(ours).not.toBe(0);
    for (const n of [1, 2]) {
      expect((await etcd.ctl(["del", key])).stdout.trim()).toBe("1");
      const deletedAt = Date.now();
      await waitFor(`key back after delete ${n}`, async () => (await get(key)) === '{"weight":50}', 5_000, 20);
      expect(Date.now() - deletedAt).toBeLessThan(2_000);
      // On the registrar's lease: it still vanishes with the registrar.
      expect(await lease()).toBe(ours);
      await waitFor(`the put-back said (${n})`, async () => said() === n, 5_000);
    }
    await new Promise((res) => setTimeout(res, 500));
    expect(said()).toBe(2);
    r.child.kill("SIGTERM");
    expect(await r.exited).toBe(0);
    // Our own revoke is not put back.
    await new Promise((res) => setTimeout(res, 1_000));
    expect(await get(key)).toBe("");
    expect(said()).toBe(2);
  });

  test("without an etcd endpoint (no --etcd-endpoints, NGINX_LB_ETCD_ENDPOINTS or HOST_IP) it refuses: exit 2 naming the flag", async () => {
    const env = { ...process.env };
    for (const name of ["NGINX_LB_ETCD_ENDPOINTS", "HOST_IP", "ETCD_PORT"]) delete env[name];
    const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;
    for (const command of ["register", "deregister"]) {
      const child = spawn(
        process.execPath,
        ["--import", "tsx", main, command, "--app", "shop", "--service", "web", "--ip", "10.5.0.9"],
        { stdio: ["ignore", "pipe", "pipe"], env },
      );
      children.push(child);
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((res) => child.once("exit", (c) => res(c)));
      expect(code).toBe(2);
      expect(out.trim().split("\n")).toEqual([
        "error: --etcd-endpoints: no etcd endpoint given: pass --etcd-endpoints URL[,URL...] (or set NGINX_LB_ETCD_ENDPOINTS, or HOST_IP and ETCD_PORT)",
      ]);
    }
  });

  test("deregister deletes the key", async () => {
    const key = `${P}/shop-db/ips/10.5.0.4`;
    await etcd.ctl(["put", key, '{"weight":1}']);
    const d = cli([
      "deregister",
      "--etcd-endpoints",
      etcd.endpoint,
      "--app",
      "shop",
      "--service",
      "db",
      "--ip",
      "10.5.0.4",
    ]);
    children.push(d.child);
    expect(await d.exited).toBe(0);
    expect(d.output()).toContain(`deleted ${key}`);
    expect(await get(key)).toBe("");
  });
});
