/**
 * The daemon over a real etcd, driven as a user drives it: real `nginx-lb run` processes, real nginx, real backends on
 * 127.0.0.x, keys written with etcdctl (v3, and v2 with `etcdctl set`) or by `nginx-lb register`.
 */
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { Etcd3 } from "etcd3";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, sleep, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir, unconfirmedNginx } from "../helpers/nginx.js";

let pool: BackendPool;
let etcd: EtcdServer;
beforeAll(async () => {
  [pool, etcd] = await Promise.all([startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]), startEtcd({ v2: true })]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

const w = (n: number) => JSON.stringify({ weight: n });

/** A services.json with one route to `<app>-api`, a state dir, and a daemon reading prefix `prefix` from etcd. */
async function daemon(app: string, prefix: string, extra: string[] = [], dir?: string) {
  const d = dir ?? (await tempDir("nginx-lb-etcd-e2e-"));
  const port = await freePort();
  const services = join(d, `services-${port}.json`);
  await writeServices(services, [
    { domain_name: "a.test", frontend_port: port, routes: { "/": { app, service: "api", port: pool.port } } },
  ]);
  const lb = await startController({
    env: { NGINX_LB_ENDPOINTS_MODE: mode },
    stateDir: join(d, "state"),
    services,
    args: ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, ...extra],
  });
  const url = `http://127.0.0.1:${port}/`;
  return { lb, url, dir: d };
}

const who = async (url: string) => {
  const r = await get(url, { host: "a.test", timeoutMs: 3000 });
  return r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`;
};

/** Polls until `n` consecutive requests all reach one of `ips` (and, when more than one, every one of them). */
async function servedBy(url: string, ips: string[], what: string, timeoutMs = 15_000) {
  await eventually(
    async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const b = await who(url);
        // Thrown, not false: a timeout then says what was served last.
        if (!ips.includes(b)) throw new Error(`served by ${b}`);
        seen.add(b);
      }
      if (seen.size !== ips.length) throw new Error(`served by ${[...seen].join(", ")} only`);
      return true;
    },
    timeoutMs,
    what,
  );
}

/** The endpoints mode of the running describe block: the v3 suite runs once per mode. */
let mode: "reload" | "dynamic" = "reload";

describe.each(["reload", "dynamic"] as const)("nginx-lb run over etcd v3 (%s endpoints)", (m) => {
  beforeAll(() => {
    mode = m;
  });

  it("put and delete of a backend key: traffic starts and stops reaching it", async () => {
    const prefix = `/e2e/${mode}/putdel`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w(1)]);
    const { url, lb } = await daemon("web", prefix);
    await servedBy(url, ["127.0.0.2"], "initial endpoint");
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.3`, w(1)]);
    await servedBy(url, ["127.0.0.2", "127.0.0.3"], "added endpoint in rotation");
    await etcd.ctl(["del", `${prefix}/web-api/ips/127.0.0.2`]);
    await servedBy(url, ["127.0.0.3"], "deleted endpoint out of rotation");
    await lb.stop();
  });

  it("etcd stopped and restarted: traffic keeps flowing, a change made after the restart is applied", async () => {
    const prefix = `/e2e/${mode}/restart`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w(1)]);
    const { url, lb } = await daemon("web", prefix);
    await servedBy(url, ["127.0.0.2"], "initial endpoint");
    await etcd.stop();
    await lb.waitFor(/etcd at .*serving the last known endpoints/);
    // Bounded: 40 requests while etcd is down, every one served on the last config.
    for (let i = 0; i < 40; i++) expect(await who(url)).toBe("127.0.0.2");
    await etcd.start();
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.4`, w(1)]);
    await etcd.ctl(["del", `${prefix}/web-api/ips/127.0.0.2`]);
    await servedBy(url, ["127.0.0.4"], "the change made after the restart", 30_000);
    await lb.stop();
  });

  it("a start with etcd down serves the last known endpoints from the state dir", async () => {
    const prefix = `/e2e/${mode}/statedir`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.3`, w(1)]);
    const first = await daemon("web", prefix);
    await servedBy(first.url, ["127.0.0.3"], "endpoint from etcd");
    await first.lb.stop();
    await etcd.stop();
    try {
      const again = await daemon("web", prefix, [], first.dir);
      await again.lb.waitFor(/serving the last known endpoints/);
      await servedBy(again.url, ["127.0.0.3"], "last known endpoint while etcd is down");
      await again.lb.stop();
    } finally {
      await etcd.start();
    }
  });

  it("a stop during the first start keeps what nginx was started with: a restart with etcd down serves it", async () => {
    const prefix = `/e2e/${mode}/cut-short`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.4`, w(1)]);
    const dir = await tempDir("nginx-lb-etcd-e2e-");
    // A master that never confirms its config: the stop comes while the controller waits for it, every time.
    const first = await daemon("web", prefix, ["--nginx", await unconfirmedNginx(dir)], dir);
    await first.lb.waitFor(/^started nginx$/);
    expect(first.lb.applies()).toEqual([]);
    await first.lb.stop();
    await first.lb.waitFor(/nginx's start was not confirmed; its routes and endpoints are saved/);
    await etcd.stop();
    try {
      const again = await daemon("web", prefix, [], dir);
      await again.lb.waitFor(/serving the last known endpoints/);
      await servedBy(again.url, ["127.0.0.4"], "the endpoint the cut-short start had, while etcd is down");
      await again.lb.stop();
    } finally {
      await etcd.start();
    }
  });

  it("two instances against one etcd converge on the same change", async () => {
    const prefix = `/e2e/${mode}/ha`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w(1)]);
    const [a, b] = await Promise.all([daemon("web", prefix), daemon("web", prefix)]);
    await Promise.all([servedBy(a.url, ["127.0.0.2"], "a initial"), servedBy(b.url, ["127.0.0.2"], "b initial")]);
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.4`, w(1)]);
    await etcd.ctl(["del", `${prefix}/web-api/ips/127.0.0.2`]);
    await Promise.all([servedBy(a.url, ["127.0.0.4"], "a converged"), servedBy(b.url, ["127.0.0.4"], "b converged")]);
    await Promise.all([a.lb.stop(), b.lb.stop()]);
  });

  it("a burst of 500 key changes: a handful of reloads (none in dynamic mode), and all 500 applied", async () => {
    const prefix = `/e2e/${mode}/burst`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w(1)]);
    const { lb, dir } = await daemon("web", prefix);
    await lb.waitFor(/nginx started|config applied/);
    const before = lb.applies("reload").length;
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      // 500 separate puts (500 revisions, 500 watch events), all within about a second.
      await Promise.all(
        Array.from({ length: 500 }, (_, i) =>
          client.put(`${prefix}/web-api/ips/10.7.${i >> 8}.${i & 255}`).value(w(1)),
        ),
      );
    } finally {
      client.close();
    }
    // state.json is written once nginx took the change (reload confirmed, or push acknowledged).
    await eventually(
      async () => {
        const state = JSON.parse(await readFile(join(dir, "state/state.json"), "utf8")) as {
          backends?: Record<string, Record<string, unknown>>;
        };
        return Object.keys(state.backends?.["web-api"] ?? {}).filter((ip) => ip.startsWith("10.7.")).length === 500;
      },
      15_000,
      "all 500 endpoints applied",
    );
    if (mode === "reload")
      expect((await readFile(join(dir, "state/nginx.conf"), "utf8")).match(/server 10\.7\./g)?.length).toBe(500);
    // A window for any further reloads the burst would cause, before counting them.
    await sleep(1_000);
    const reloads = lb.applies("reload").length - before;
    // The reconciler coalesces; the source emits whole sets, at most one per watch response.
    if (mode === "reload") {
      expect(reloads).toBeGreaterThanOrEqual(1);
      expect(reloads).toBeLessThanOrEqual(5);
    } else expect(reloads).toBe(0);
    await lb.stop();
  });

  it("nginx-lb register puts the backend into rotation; after kill -9 it leaves when the TTL runs out", async () => {
    const prefix = `/e2e/${mode}/register`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w(1)]);
    const { url, lb } = await daemon("web", prefix);
    await servedBy(url, ["127.0.0.2"], "initial endpoint");
    const main = join(new URL("../..", import.meta.url).pathname, "src/cli/main.ts");
    const registrar = spawn(
      process.execPath,
      ["--import", "tsx", main, "register", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix].concat([
        "--app",
        "web",
        "--service",
        "api",
        "--ip",
        "127.0.0.3",
        "--ttl",
        "3",
      ]),
      { stdio: "ignore" },
    );
    try {
      await servedBy(url, ["127.0.0.2", "127.0.0.3"], "registered endpoint in rotation");
      registrar.kill("SIGKILL");
      await servedBy(url, ["127.0.0.2"], "endpoint gone after the TTL", 20_000);
    } finally {
      registrar.kill("SIGKILL");
    }
    await lb.stop();
  });
});

describe("nginx-lb run over etcd v2 (etcdctl set)", () => {
  it("follows keys written with the v2 API", async () => {
    const prefix = "/e2e/v2";
    await etcd.ctl(["set", `${prefix}/web-api/ips/127.0.0.2`, w(1)], { api: 2 });
    const { url, lb } = await daemon("web", prefix, ["--etcd-api", "v2"]);
    await servedBy(url, ["127.0.0.2"], "initial v2 endpoint");
    await etcd.ctl(["set", `${prefix}/web-api/ips/127.0.0.4`, w(1)], { api: 2 });
    await etcd.ctl(["rm", `${prefix}/web-api/ips/127.0.0.2`], { api: 2 });
    await servedBy(url, ["127.0.0.4"], "v2 change applied");
    await lb.stop();
  });
});

describe("nginx-lb run over etcd with auth", () => {
  let secure: EtcdServer;
  beforeAll(async () => {
    secure = await startEtcd();
    await secure.ctl(["put", "/e2e/auth/web-api/ips/127.0.0.3", w(1)]);
    await secure.enableAuth("s3cret-pw");
  });
  afterAll(async () => {
    await secure?.destroy();
  });

  it("reads with the password from a file; a wrong password is a clear error and never logged", async () => {
    const dir = await tempDir("nginx-lb-etcd-auth-");
    const right = join(dir, "right");
    const wrong = join(dir, "wrong");
    await writeFile(right, "s3cret-pw\n");
    await writeFile(wrong, "not-the-pw\n");
    const run = async (file: string) => {
      const port = await freePort();
      const services = join(dir, `services-${port}.json`);
      await writeServices(services, [
        {
          domain_name: "a.test",
          frontend_port: port,
          routes: { "/": { app: "web", service: "api", port: pool.port } },
        },
      ]);
      const lb = await startController({
        stateDir: join(dir, `state-${port}`),
        services,
        args: ["--etcd-endpoints", secure.endpoint, "--etcd-prefix", "/e2e/auth"].concat([
          "--etcd-username",
          "root",
          "--etcd-password-file",
          file,
        ]),
      });
      return { lb, url: `http://127.0.0.1:${port}/` };
    };
    const good = await run(right);
    await servedBy(good.url, ["127.0.0.3"], "endpoint read with auth");
    await good.lb.stop();
    const bad = await run(wrong);
    await bad.lb.waitFor(/etcd at \S+ rejected the credentials of user \\"root\\"/);
    expect(JSON.stringify(bad.lb.lines)).not.toContain("not-the-pw");
    await bad.lb.stop();
  });
});
