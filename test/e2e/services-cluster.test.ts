/**
 * The routing table in a real three-member etcd cluster on loopback, served by two real `nginx-lb run
 * --services-etcd-prefix` controllers (real nginx, real backends) that are given every member, written by the real
 * `nginx-lb services` CLI: every instance serves a push; a bad key is rejected by both; concurrent pushes; the etcd
 * leader killed (kill -9) during load and a push; a restart with the whole cluster down; a large push.
 */
import { execFile, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { StatusView } from "../../src/admin/view.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, type Controller } from "../helpers/controller.js";
import { startEtcdCluster, type EtcdCluster } from "../helpers/etcd-cluster.js";
import { get } from "../helpers/http.js";
import { load } from "../helpers/load.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ROUTES = "/cluster/services";
const REGISTRY = "/cluster/backends";
// Each controller's nginx listens on its own loopback address: both serve the same frontend port.
const HOSTS = ["127.0.0.20", "127.0.0.21"] as const;
/** Servers in the large push; NGINX_LB_TEST_BIG_PUSH=10000 for the size (bench/figures/services.ts has it). */
const BIG = Number(process.env["NGINX_LB_TEST_BIG_PUSH"] ?? 2000);

let pool: BackendPool;
let cluster: EtcdCluster;
let dir: string;
let port: number;
beforeAll(async () => {
  [pool, cluster, dir, port] = await Promise.all([
    startBackends(["127.0.0.2", "127.0.0.3"]),
    startEtcdCluster(),
    tempDir("nginx-lb-routes-cluster-"),
    freePort(),
  ]);
  await cluster.ctl(["put", `${REGISTRY}/a-web/ips/127.0.0.2`, '{"weight":1}']);
  await cluster.ctl(["put", `${REGISTRY}/b-web/ips/127.0.0.3`, '{"weight":1}']);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await cluster?.destroy();
  await cleanupNginx();
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
/** Starts the real CLI against every member: its pid and its result. */
function started(args: string[]): { pid: number; done: Promise<Result> } {
  let pid = 0;
  const done = new Promise<Result>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/main.ts"), ...args], {
      cwd: ROOT,
      env: {
        ...process.env,
        NGINX_LB_ETCD_ENDPOINTS: cluster.endpoints.join(","),
        NGINX_LB_SERVICES_ETCD_PREFIX: ROUTES,
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
    pid = child.pid ?? 0;
  });
  return { pid, done };
}
const cli = (args: string[]) => started(args).done;

/** Whether each of these processes holds a TCP connection to a member (a frozen etcd's kernel still accepts them). */
async function connectedToEtcd(pids: number[]): Promise<boolean> {
  const filter = cluster.endpoints.map((e) => `dport = :${new URL(e).port}`).join(" or ");
  const out = await new Promise<string>((resolve) =>
    execFile("ss", ["-Htnp", "state", "established", `( ${filter} )`], (_e, stdout) => resolve(stdout)),
  );
  return pids.every((pid) => out.includes(`pid=${pid},`));
}

const server = (domain: string, app: string, path = "/") => ({
  domain_name: domain,
  frontend_port: port,
  routes: { [path]: { app, service: "web", port: pool.port } },
});
async function file(name: string, servers: unknown[]): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, JSON.stringify({ version: "0.1", servers }));
  return f;
}
/** The table in etcd: key (without the prefix) -> value. */
async function table(): Promise<Record<string, string>> {
  const out = (await cluster.ctl(["get", "--prefix", `${ROUTES}/`, "-w", "json"])).stdout;
  const kvs = (JSON.parse(out) as { kvs?: { key: string; value: string }[] }).kvs ?? [];
  const b64 = (s: string) => Buffer.from(s, "base64").toString();
  return Object.fromEntries(kvs.map((kv) => [b64(kv.key).slice(ROUTES.length + 1), b64(kv.value)]));
}
const asTable = (servers: { domain_name: string }[]) =>
  Object.fromEntries(servers.map((s) => [`${s.domain_name}:${port}`, JSON.stringify(s)]));

interface Lb {
  lb: Controller;
  host: string;
  admin: number;
}
async function controller(i: 0 | 1): Promise<Lb> {
  const host = HOSTS[i];
  const admin = await freePort();
  const lb = await startController({
    stateDir: join(dir, `state-${i}`),
    // Never read: the routes come from etcd.
    services: join(dir, "absent.json"),
    args: [
      "--listen-host",
      host,
      "--etcd-endpoints",
      cluster.endpoints.join(","),
      "--etcd-prefix",
      REGISTRY,
      "--services-etcd-prefix",
      ROUTES,
      "--admin-listen",
      `127.0.0.1:${admin}`,
    ],
  });
  return { lb, host, admin };
}

/** Which backend answers `domain` (at `path`) on this controller, or the status. */
async function who(c: Lb, domain: string, path = "/"): Promise<string> {
  const r = await get(`http://${c.host}:${port}${path}`, { host: domain, timeoutMs: 5000 }).catch((e: Error) => ({
    status: 0,
    error: e.message,
  }));
  return "json" in r && r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`;
}
const status = async (c: Lb) => (await (await fetch(`http://127.0.0.1:${c.admin}/api/status`)).json()) as StatusView;
const servedBy = (lbs: Lb[], domain: string, backend: string, timeoutMs = 20_000) =>
  Promise.all(
    lbs.map((c) => eventually(async () => (await who(c, domain)) === backend, timeoutMs, `${domain} on ${c.host}`)),
  );

let lbs: Lb[] = [];

describe("routes from a three-member etcd cluster, two controllers", () => {
  test("a push is served by both; get round-trips; --dry-run changes nothing; a bad key is rejected by both while others update", async () => {
    lbs = [await controller(0), await controller(1)];
    const servers = [server("a.test", "a"), server("c.test", "b")];
    const f = await file("services.json", servers);
    const pushed = await cli(["services", "push", f]);
    expect(pushed.code, pushed.stderr).toBe(0);
    await servedBy(lbs, "a.test", "127.0.0.2");
    await servedBy(lbs, "c.test", "127.0.0.3");

    // Round trip: what get prints validates and equals the file.
    const out = join(dir, "got.json");
    const got = await cli(["services", "get", "--out", out]);
    expect(got.code, got.stderr).toBe(0);
    expect((await cli(["validate", out])).code).toBe(0);
    const { readFile } = await import("node:fs/promises");
    expect(JSON.parse(await readFile(out, "utf8"))).toEqual({ version: "0.1", servers });

    // --dry-run of another table: etcd and both controllers unchanged.
    const rev = await cluster.revision();
    const dry = await cli(["services", "push", "--dry-run", await file("dry.json", [server("a.test", "b")])]);
    expect([dry.code, dry.stdout]).toEqual([
      0,
      `- c.test:${port}\n~ a.test:${port}: route / changed: a-web:${pool.port} -> b-web:${pool.port}\n`,
    ]);
    expect(await cluster.revision()).toBe(rev);
    for (const c of lbs) expect(await who(c, "a.test")).toBe("127.0.0.2");

    // A hand-written invalid key (no service): rejected by both, with its reason in the status; others keep updating.
    await cluster.ctl([
      "put",
      `${ROUTES}/bad.test:${port}`,
      JSON.stringify({ domain_name: "bad.test", frontend_port: port, routes: { "/": { app: "a" } } }),
    ]);
    await writeFile(join(dir, "b.json"), JSON.stringify(server("b.test", "b")));
    const set = await cli(["services", "set", join(dir, "b.json")]);
    expect(set.code, set.stderr).toBe(0);
    await servedBy(lbs, "b.test", "127.0.0.3");
    for (const c of lbs) {
      const s = await status(c);
      expect(s.routes).toMatchObject({ kind: "etcd", prefix: ROUTES, connected: true, keys: 4 });
      expect(s.routes?.kind === "etcd" && s.routes.rejected.map((r) => [r.key, r.problems[0]?.path])).toEqual([
        [`${ROUTES}/bad.test:${port}`, `${ROUTES}/bad.test:${port}.routes["/"].service`],
      ]);
    }
    await cluster.ctl(["del", `${ROUTES}/bad.test:${port}`]);
  });

  test("concurrent pushes from one base revision: exactly one wins per round, the loser exits 1 naming the conflict", async () => {
    const base = await file("base.json", [server("a.test", "a"), server("b.test", "b"), server("c.test", "b")]);
    // Different keys on each side: an interleaving would leave a table equal to neither file.
    const one = [server("a.test", "a"), server("b.test", "a"), server("x.test", "a")];
    const two = [server("a.test", "a"), server("c.test", "a"), server("y.test", "b")];
    const [fa, fb] = [await file("one.json", one), await file("two.json", two)];
    let conflicts = 0;
    const deadline = Date.now() + 120_000;
    for (let round = 0; round < 4 && Date.now() < deadline; round++) {
      const reset = await cli(["services", "push", base]);
      expect(reset.code, reset.stderr).toBe(0);
      // Every member frozen while both start and connect: once thawed both read at the same revision.
      cluster.pauseAll();
      const both = [started(["services", "push", fa]), started(["services", "push", fb])];
      try {
        await eventually(() => connectedToEtcd(both.map((b) => b.pid)), 30_000, "both pushes connected");
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        cluster.resumeAll();
      }
      const results = await Promise.all(both.map((b) => b.done));
      const codes = results.map((r) => r.code);
      const now = await table();
      if (codes.includes(1)) {
        conflicts++;
        expect([...codes].sort()).toEqual([0, 1]);
        const loser = results.find((r) => r.code === 1);
        expect(loser?.stderr).toMatch(
          /error: conflict: the table under \/cluster\/services changed after revision \d+ \(another writer\): nothing was written/,
        );
        expect(now).toEqual(asTable(codes[0] === 0 ? one : two));
      } else {
        // Not overlapping after all: each applied in turn (the second on top of the first), never another failure.
        expect(codes).toEqual([0, 0]);
        expect([asTable(one), asTable(two)]).toContainEqual(now);
      }
    }
    expect(conflicts).toBeGreaterThan(0);
  }, 240_000);

  test("the etcd leader killed (kill -9) during load and a push: 0 failed requests; the push applied or said it failed", async () => {
    const before = [server("a.test", "a"), server("b.test", "b"), server("c.test", "b")];
    const after = [server("a.test", "a"), server("b.test", "a"), server("d.test", "b")];
    expect((await cli(["services", "push", await file("lead0.json", before)])).code).toBe(0);
    await servedBy(lbs, "c.test", "127.0.0.3");
    const traffic = lbs.map((c) =>
      load(`http://${c.host}:${port}/`, { host: "a.test", count: 6000, concurrency: 2, maxMs: 60_000 }),
    );
    const victim = await cluster.leader();
    // Every member frozen while the push starts and connects; the leader dies frozen (it never sees the push), the
    // others thaw without it: the push's read and write meet the election, or its connection to the dead member.
    cluster.pauseAll();
    const push = started(["services", "push", await file("lead1.json", after)]);
    try {
      await eventually(() => connectedToEtcd([push.pid]), 30_000, "the push connected");
      await cluster.kill(victim);
    } finally {
      cluster.resumeAll();
    }
    const result = await push.done;
    const now = await table();
    // One transaction: the whole push or none of it, never half a server or half the table.
    expect([asTable(before), asTable(after)]).toContainEqual(now);
    if (result.code === 0) {
      expect(now).toEqual(asTable(after));
      await servedBy(lbs, "b.test", "127.0.0.2", 30_000);
      await servedBy(lbs, "d.test", "127.0.0.3", 30_000);
    } else {
      expect(result.stderr).toMatch(/error: /);
    }
    // Both instances converge on whatever etcd holds now.
    const rev = await cluster.revision();
    for (const c of lbs)
      await eventually(
        async () => {
          const s = await status(c);
          return s.routes?.kind === "etcd" && s.routes.revision >= rev && s.routes.keys === Object.keys(now).length;
        },
        30_000,
        `${c.host} at revision ${rev}`,
      );
    await Promise.all(traffic.map((t) => t.stop()));
    expect(traffic.map((t) => t.done).every((n) => n > 0)).toBe(true);
    expect(traffic.flatMap((t) => t.failures)).toEqual([]);
    // What the push said, for the record of this run (applied or the reason it failed).
    expect(result.stderr).toMatch(result.code === 0 ? /applied \d+ write/ : /error: /);

    await cluster.start(victim);
    await cluster.waitHealthy();
    expect(new Set((await cluster.status()).map((s) => s.leader)).size).toBe(1);
  });

  test("a controller restarted while every member is down serves the table it saved", async () => {
    const [first] = lbs;
    if (!first) throw new Error("the first test starts the controllers");
    const servers = [server("a.test", "b"), server("e.test", "a")];
    expect((await cli(["services", "push", await file("down.json", servers)])).code).toBe(0);
    await servedBy(lbs, "e.test", "127.0.0.2");
    await first.lb.stop();
    await cluster.stopAll();
    try {
      const again = await controller(0);
      lbs[0] = again;
      await servedBy([again], "a.test", "127.0.0.3");
      await servedBy([again], "e.test", "127.0.0.2");
      const s = await status(again);
      expect(s.routes).toMatchObject({ kind: "etcd", connected: false, keys: 2 });
    } finally {
      await cluster.startAll();
      await cluster.waitHealthy();
    }
    await eventually(
      async () => {
        const r = (await status(lbs[0] as Lb)).routes;
        return r?.kind === "etcd" && r.connected;
      },
      30_000,
      "the restarted controller reconnected",
    );
  });

  test(`a push of ${BIG} servers completes in guarded batches and both instances converge`, async () => {
    // Each server routes only its own path: a host that is not served falls to the port's default server, which
    // answers that path with no route of its own.
    const servers = Array.from({ length: BIG }, (_, i) => server(`s${i}.test`, i % 2 ? "a" : "b", `/s${i}/`));
    const f = await file("big.json", servers);
    const t0 = Date.now();
    const r = await cli(["services", "push", f]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`applied ${BIG + 2} write\\(s\\) in \\d+ transaction\\(s\\)`));
    const rev = await cluster.revision();
    for (const c of lbs)
      await eventually(
        async () => {
          const s = await status(c).catch(() => null);
          return s?.routes?.kind === "etcd" && s.routes.revision >= rev && s.routes.keys === BIG;
        },
        180_000,
        `${c.host} holds ${BIG} servers`,
      );
    const sample = Array.from({ length: 300 }, () => Math.floor(Math.random() * BIG));
    const expected = (i: number) => (i % 2 ? "127.0.0.2" : "127.0.0.3");
    // The source holds every key; nginx takes the table with the next apply.
    for (const c of lbs)
      for (const i of sample)
        await eventually(
          async () => (await who(c, `s${i}.test`, `/s${i}/x`)) === expected(i),
          120_000,
          `s${i}.test on ${c.host}`,
        );
    const converged = Date.now() - t0;
    // Servers gone from the file are gone from both.
    for (const c of lbs) expect(await who(c, "e.test")).not.toBe("127.0.0.2");
    expect(converged).toBeLessThan(240_000);
  }, 300_000);
});
