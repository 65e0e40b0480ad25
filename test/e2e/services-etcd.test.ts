/**
 * The routing table in etcd, end to end: two real `nginx-lb run --services-etcd-prefix` controllers on one etcd
 * (one member), real nginx, real backends, the table written by the real `nginx-lb services` CLI (and by hand with
 * etcdctl for a bad key).
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { StatusView } from "../../src/admin/view.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { startRoutesLb, type RoutesLb } from "../helpers/routes-lb.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ROUTES = "/e2e-routes/services";
const REGISTRY = "/e2e-routes/backends";
// Each controller's nginx listens on its own loopback address: both serve the same frontend ports.
const HOSTS = ["127.0.0.10", "127.0.0.11"] as const;

let pool: BackendPool;
let etcd: EtcdServer;
let dir: string;
let port: number;
beforeAll(async () => {
  [pool, etcd, dir, port] = await Promise.all([
    startBackends(["127.0.0.2", "127.0.0.3"]),
    startEtcd(),
    tempDir("nginx-lb-routes-e2e-"),
    freePort(),
  ]);
  await etcd.ctl(["put", `${REGISTRY}/a-web/ips/127.0.0.2`, '{"weight":1}']);
  await etcd.ctl(["put", `${REGISTRY}/b-web/ips/127.0.0.3`, '{"weight":1}']);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/main.ts"), ...args], {
      cwd: ROOT,
      env: { ...process.env, NGINX_LB_ETCD_ENDPOINTS: etcd.endpoint, NGINX_LB_SERVICES_ETCD_PREFIX: ROUTES },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

const server = (domain: string, app: string) => ({
  domain_name: domain,
  frontend_port: port,
  routes: { "/": { app, service: "web", port: pool.port } },
});

type Lb = RoutesLb;
const controller = (i: 0 | 1, extra: string[] = [], readyMsg?: string): Promise<Lb> =>
  startRoutesLb({
    dir,
    host: HOSTS[i],
    name: String(i),
    etcd: etcd.endpoint,
    registry: REGISTRY,
    routes: ROUTES,
    args: extra,
    ...(readyMsg ? { readyMsg } : {}),
  });

/** Which backend answers `domain` on this controller, or the status. */
async function who(c: Lb, domain: string): Promise<string> {
  const r = await get(`http://${c.host}:${port}/`, { host: domain, timeoutMs: 3000 }).catch((e: Error) => ({
    status: 0,
    error: e.message,
  }));
  return "json" in r && r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`;
}
const status = async (c: Lb) => (await (await fetch(`http://127.0.0.1:${c.admin}/api/status`)).json()) as StatusView;

let lbs: Lb[] = [];

describe("routes from etcd, two controllers", () => {
  test("a push is served by both; --dry-run changes nothing; a bad key is rejected by both while others update", async () => {
    lbs = [await controller(0), await controller(1)];
    const f = join(dir, "services.json");
    await writeFile(f, JSON.stringify({ version: "0.1", servers: [server("a.test", "a")] }));
    const pushed = await cli(["services", "push", f]);
    expect(pushed.code, pushed.stderr).toBe(0);
    for (const c of lbs)
      await eventually(async () => (await who(c, "a.test")) === "127.0.0.2", 15_000, `a.test on ${c.host}`);

    // --dry-run of another table: etcd and both controllers unchanged.
    const f2 = join(dir, "services2.json");
    await writeFile(f2, JSON.stringify({ version: "0.1", servers: [server("a.test", "b")] }));
    const rev = await etcd.revision();
    const dry = await cli(["services", "push", "--dry-run", f2]);
    expect([dry.code, dry.stdout]).toEqual([
      0,
      "~ a.test:" + port + ": route / changed: a-web:" + pool.port + " -> b-web:" + pool.port + "\n",
    ]);
    expect(await etcd.revision()).toBe(rev);
    for (const c of lbs) expect(await who(c, "a.test")).toBe("127.0.0.2");

    // A hand-written invalid key: rejected by both, named with its reason in the status; the others keep updating.
    await etcd.ctl([
      "put",
      `${ROUTES}/bad.test:${port}`,
      JSON.stringify({ domain_name: "bad.test", frontend_port: port, routes: { "/": { app: "a" } } }),
    ]);
    const one = join(dir, "b.json");
    await writeFile(one, JSON.stringify(server("b.test", "b")));
    const set = await cli(["services", "set", one]);
    expect(set.code, set.stderr).toBe(0);
    for (const c of lbs) {
      await eventually(async () => (await who(c, "b.test")) === "127.0.0.3", 15_000, `b.test on ${c.host}`);
      const s = await status(c);
      expect(s.routes).toMatchObject({ kind: "etcd", prefix: ROUTES, connected: true, keys: 3 });
      expect(s.routes?.kind === "etcd" && s.routes.rejected.map((r) => [r.key, r.problems[0]?.path])).toEqual([
        [`${ROUTES}/bad.test:${port}`, `${ROUTES}/bad.test:${port}.routes["/"].service`],
      ]);
      const cliStatus = await cli(["status", "--admin", `127.0.0.1:${c.admin}`]);
      expect(cliStatus.code).toBe(1);
      expect(cliStatus.stdout).toMatch(new RegExp(`rejected\\s+etcd key \\(absent\\)\\s+${ROUTES}/bad\\.test:${port}`));
      // The bad server is absent: its host falls to the port's default server, never to a route of its own.
      expect(await who(c, "bad.test")).not.toBe("127.0.0.2");
    }
  });

  test("a controller restarted while etcd is down serves the table it saved", async () => {
    const [first] = lbs;
    if (!first) throw new Error("the first test starts the controllers");
    await first.lb.stop();
    await etcd.stop();
    try {
      const again = await controller(0);
      for (const d of [
        ["a.test", "127.0.0.2"],
        ["b.test", "127.0.0.3"],
      ] as const)
        await eventually(async () => (await who(again, d[0])) === d[1], 20_000, `${d[0]} from the saved table`);
      const s = await status(again);
      expect(s.routes).toMatchObject({ kind: "etcd", connected: false, keys: 3 });
      expect(s.routes?.kind === "etcd" && s.routes.origin).toMatch(/state dir/);
    } finally {
      await etcd.start();
    }
  });

  test("round trip: services get equals what was pushed", async () => {
    const f = join(dir, "rt.json");
    const servers = [server("a.test", "a"), server("b.test", "b"), server("c.test", "a")];
    await etcd.ctl(["del", `${ROUTES}/bad.test:${port}`]);
    await writeFile(f, JSON.stringify({ version: "0.1", servers }));
    expect((await cli(["services", "push", f])).code).toBe(0);
    const got = await cli(["services", "get"]);
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toEqual({ version: "0.1", servers });
  });
});
