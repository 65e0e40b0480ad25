import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sample, startAdminLb, type AdminLb } from "../helpers/admin.js";
import { CHECK_PATH, startBackends, type BackendPool } from "../helpers/backends.js";
import { stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx } from "../helpers/nginx.js";
import { eventually } from "../helpers/wait.js";

/**
 * Traffic figures counted by nginx itself (dynamic mode: the Lua log phase adds to a shared dict the controller
 * drains once a second), through the real `nginx-lb run`: a route over two endpoints, one answering 500. What the
 * client saw must equal /metrics per route and per endpoint, after a reload (the dict is kept) and after nginx is
 * killed and started again (an empty dict: nothing counted twice, nothing negative). Reload endpoints mode reports
 * the same figures through its record file, which nginx writes out when a reload retires its workers.
 */

let pool: BackendPool;
let t: AdminLb;
/** The same route in reload endpoints mode (nginx appends a record per request to a file). */
let rl: AdminLb;
const GOOD = "127.0.0.2";
const BAD = "127.0.0.3";

beforeAll(async () => {
  pool = await startBackends([GOOD, BAD]);
  // The backends answer their check path as told: through the route, /healthz is 200 from one and 500 from the other.
  pool.get(BAD).setCheck("500");
  const start = (mode: "dynamic" | "reload") =>
    startAdminLb({
      pool,
      endpoints: { "web-api": { [GOOD]: { weight: 1 }, [BAD]: { weight: 1 } } },
      servers: (sitePort) => [
        {
          domain_name: "a.test",
          frontend_port: sitePort,
          routes: { "/": { app: "web", service: "api", port: pool.port } },
        },
      ],
      args: ["--endpoints-mode", mode, "--worker-processes", "2"],
    });
  t = await start("dynamic");
  rl = await start("reload");
}, 60_000);
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

interface Seen {
  ok: number;
  failed: number;
}

function tally(status: number, body: string, seen: Seen): void {
  if (status === 200) seen.ok++;
  else if (status === 500) seen.failed++;
  else throw new Error(`unexpected status ${status}: ${body}`);
}

async function send(n: number, seen: Seen, lb = t): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await lb.site(CHECK_PATH);
    tally(r.status, r.body, seen);
  }
}

/** /metrics once every figure equals what the client saw (each counter read is at most a second behind). */
async function metricsMatching(seen: Seen, label: string, lb = t): Promise<string> {
  const route = "a.test:" + String(lb.sitePort) + "/";
  const ep = (ip: string) => ({ route, endpoint: `${ip}:${pool.port}` });
  let last = "";
  try {
    return await eventually(
      async () => {
        const m = (last = (await lb.admin("/metrics")).body);
        const figures = [
          sample(m, "nginx_lb_route_requests_total", { route, class: "2xx" }) ?? 0,
          sample(m, "nginx_lb_route_requests_total", { route, class: "5xx" }) ?? 0,
          sample(m, "nginx_lb_endpoint_requests_total", ep(GOOD)) ?? 0,
          sample(m, "nginx_lb_endpoint_requests_total", ep(BAD)) ?? 0,
          sample(m, "nginx_lb_endpoint_errors_total", ep(BAD)) ?? 0,
          sample(m, "nginx_lb_endpoint_errors_total", ep(GOOD)) ?? 0,
          sample(m, "nginx_lb_route_upstream_response_seconds_count", { route }) ?? 0,
        ];
        const want = [seen.ok, seen.failed, seen.ok, seen.failed, seen.failed, 0, seen.ok + seen.failed];
        return figures.join() === want.join() ? m : null;
      },
      10_000,
      label,
    );
  } catch (e) {
    throw new Error(
      `${(e as Error).message}\n${last
        .split("\n")
        .filter((l) => /route_requests|endpoint_(req|err)/.test(l))
        .join("\n")}`,
    );
  }
}

describe("traffic counted in nginx (dynamic mode)", () => {
  it("renders the counters, not the record file", async () => {
    const stateDir = join(t.dir, "state");
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).toContain(
      `log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_outlier").log(ctx); require("nginx_lb_stats").log(ctx) }`,
    );
    expect(conf).not.toContain("traffic.tsv");
    await expect(stat(join(stateDir, "logs/traffic.tsv"))).rejects.toThrow(/ENOENT/);
  });

  it("counts per route and per endpoint exactly what the client saw, across a reload and an nginx restart", async () => {
    const seen: Seen = { ok: 0, failed: 0 };
    await send(40, seen);
    // Round robin over two endpoints: both got requests.
    expect(seen.ok).toBeGreaterThan(0);
    expect(seen.failed).toBeGreaterThan(0);
    await metricsMatching(seen, "the first 40 requests in /metrics");

    const status = (await t.admin("/api/status")).json<{
      servers: {
        routes: { endpoints: { address: string; traffic: { requests: number; errors: number } | null }[] }[];
      }[];
    }>();
    const eps = status.servers[0]?.routes[0]?.endpoints ?? [];
    expect(eps.find((e) => e.address.startsWith(`${BAD}:`))?.traffic).toMatchObject({
      requests: seen.failed,
      errors: seen.failed,
    });
    expect(eps.find((e) => e.address.startsWith(`${GOOD}:`))?.traffic).toMatchObject({ requests: seen.ok, errors: 0 });

    // A reload (SIGHUP re-renders and reloads nginx): the dict and what it holds are kept.
    const reloads = t.lb.applies("reload").length;
    await send(10, seen);
    t.lb.signal("SIGHUP");
    await eventually(async () => t.lb.applies("reload").length > reloads, 15_000, "the reload");
    await send(20, seen);
    await metricsMatching(seen, "the requests around the reload in /metrics");

    // nginx killed and started again by the controller: a new master has an empty dict.
    const master = Number((await readFile(join(t.dir, "state/nginx.pid"), "utf8")).trim());
    const started = t.lb.find(/^started nginx$/).length;
    process.kill(master, "SIGKILL");
    await eventually(async () => t.lb.find(/^started nginx$/).length > started, 20_000, "a new nginx master");
    // Served again: each answered probe is a request like the others (one that cannot connect reaches no nginx).
    await eventually(
      async () => {
        const r = await t.site(CHECK_PATH).catch(() => null);
        if (r) tally(r.status, r.body, seen);
        return r !== null;
      },
      20_000,
      "served again",
    );
    await send(20, seen);
    await metricsMatching(seen, "the requests after the restart in /metrics");
  });
});

describe("traffic records (reload endpoints mode)", () => {
  it("counts per route and per endpoint exactly what the client saw, across a reload, from nginx's record file", async () => {
    const stateDir = join(rl.dir, "state");
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).toContain(`access_log ${join(stateDir, "logs/traffic.tsv")} nlb buffer=64k flush=1s;`);
    expect(conf).not.toContain("log_by_lua");
    const seen: Seen = { ok: 0, failed: 0 };
    await send(40, seen, rl);
    expect(seen.ok).toBeGreaterThan(0);
    expect(seen.failed).toBeGreaterThan(0);
    const m = await metricsMatching(seen, "the first 40 requests in /metrics", rl);
    // Every answer here is a few hundred bytes with its headers.
    const route = `a.test:${rl.sitePort}/`;
    expect(sample(m, "nginx_lb_route_response_bytes_total", { route })).toBeGreaterThan(40 * 100);
    expect(sample(m, "nginx_lb_route_upstream_response_seconds_sum", { route })).toBeGreaterThan(0);
    expect(sample(m, "nginx_lb_traffic_records_ignored_total", { reason: "malformed" }) ?? 0).toBe(0);

    // A reload retires the workers, which write out their buffered records first.
    const reloads = rl.lb.applies("reload").length;
    await send(10, seen, rl);
    rl.lb.signal("SIGHUP");
    await eventually(async () => rl.lb.applies("reload").length > reloads, 15_000, "the reload");
    await send(20, seen, rl);
    await metricsMatching(seen, "the requests around the reload in /metrics", rl);
  });
});
