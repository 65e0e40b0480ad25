import { execFile } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sample, startAdminLb, type AdminLb, type Endpoints } from "../helpers/admin.js";
import { loopbackIps, startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, sleep, stopAllControllers } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx } from "../helpers/nginx.js";

/**
 * Active health checks through the real CLI: real nginx, real backends on loopback whose check path refuses, hangs,
 * answers 500 or flaps; detection, recovery, fail open and probe sharing measured from the outside.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const INTERVAL = 300;
const CHECK = { interval: `${INTERVAL}ms`, timeout: "150ms", healthy: 2, unhealthy: 3 };
/** Verdict bounds: `unhealthy` (or `healthy`) probes an interval apart, plus one interval for the probes' phase. */
const DETECT_MS = (CHECK.unhealthy + 1) * INTERVAL;
const RECOVER_MS = (CHECK.healthy + 1) * INTERVAL;
/** Timer slop on a loaded machine, on top of a verdict bound. */
const SLOP = 150;

interface HealthView {
  state: string;
  since?: string;
  reason?: string;
}
interface View {
  servers: {
    routes: {
      label: string;
      failOpen?: string;
      endpoints: { address: string; weight: number; role: string; health?: HealthView }[];
    }[];
  }[];
}

let pool: BackendPool;
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
beforeAll(async () => {
  pool = await startBackends(IPS);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

const servers =
  (port: number, backup = false) =>
  (sitePort: number) => [
    {
      domain_name: "a.test",
      frontend_port: sitePort,
      routes: {
        "/": {
          app: "web",
          service: "api",
          port,
          health_check: CHECK,
          ...(backup ? { backup: { app: "spare", service: "api", port, health_check: CHECK } } : {}),
        },
      },
    },
  ];
const eps = (...ips: string[]) => Object.fromEntries(ips.map((ip) => [ip, { weight: 1 }]));

/** Each endpoint's check verdict on the first route, by address. */
async function healths(t: AdminLb): Promise<Record<string, HealthView>> {
  const view = (await t.admin("/api/status")).json<View>();
  const route = view.servers[0]?.routes[0];
  return Object.fromEntries((route?.endpoints ?? []).map((e) => [e.address, e.health ?? { state: "none" }]));
}

/**
 * Waits until every listed endpoint is in its state and the route serves accordingly; returns how long after `t0`
 * the last verdict came (its `since`, the controller's clock on this host) and how long until the status showed it.
 */
async function until(
  t: AdminLb,
  want: Record<string, string>,
  boundMs: number,
  what: string,
): Promise<{ verdictMs: number; shownMs: number }> {
  const t0 = Date.now();
  let verdictMs = 0;
  await eventually(
    async () => {
      const h = await healths(t);
      const hit = Object.entries(want).map(([ip, state]) => h[`${ip}:${pool.port}`]?.state === state);
      if (!hit.every(Boolean)) return false;
      verdictMs = Math.max(...Object.keys(want).map((ip) => Date.parse(h[`${ip}:${pool.port}`]?.since ?? "") - t0));
      return true;
    },
    boundMs + 3000,
    what,
  );
  return { verdictMs, shownMs: Date.now() - t0 };
}

/** Which backends answer `n` requests through nginx. */
async function served(t: AdminLb, n = 20): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await t.site(`/x${i}`);
    expect(r.status).toBe(200);
    seen.add(r.json<Echo>().backend);
  }
  return seen;
}

async function reset(): Promise<void> {
  for (const b of pool.backends) {
    b.setCheck("ok");
    if (!b.running) await b.start();
  }
}

describe.each(["reload", "dynamic"] as const)("health checks (%s endpoints)", (mode) => {
  const env = { NGINX_LB_ENDPOINTS_MODE: mode };
  beforeAll(reset);

  it("takes out an endpoint that refuses, hangs or answers 500 on the check path, and brings it back", async () => {
    const t = await startAdminLb({ pool, endpoints: { "web-api": eps(...IPS) }, servers: servers(pool.port), env });
    const all = (state: string) => Object.fromEntries(IPS.map((ip) => [ip, state]));
    await until(t, all("up"), 3000, "every endpoint up");
    expect(await served(t)).toEqual(new Set(IPS));

    await pool.get("127.0.0.3").stop();
    pool.get("127.0.0.4").setCheck("hang");
    pool.get("127.0.0.5").setCheck("500");
    const downs = { "127.0.0.3": "down", "127.0.0.4": "down", "127.0.0.5": "down", "127.0.0.2": "up" };
    const detect = await until(t, downs, DETECT_MS, "three endpoints down by check");
    expect(detect.verdictMs).toBeLessThanOrEqual(DETECT_MS + SLOP);
    const view = (await t.admin("/api/status")).json<View>();
    const reasons = Object.fromEntries(
      (view.servers[0]?.routes[0]?.endpoints ?? []).map((e) => [e.address.split(":")[0], e.health?.reason]),
    );
    expect(reasons).toEqual({
      "127.0.0.2": "status 200",
      "127.0.0.3": "connection refused",
      "127.0.0.4": "timed out after 150ms",
      "127.0.0.5": "status 500 (expected 200-399)",
    });
    // Left out of the set: no request reaches them (the hung one would make a client wait).
    expect(await served(t)).toEqual(new Set(["127.0.0.2"]));
    const metrics = (await t.admin("/metrics")).body;
    const label = (ip: string) => ({ route: `a.test:${t.sitePort}/`, endpoint: `${ip}:${pool.port}` });
    expect(sample(metrics, "nginx_lb_endpoint_up", label("127.0.0.5"))).toBe(0);
    expect(sample(metrics, "nginx_lb_endpoint_up", label("127.0.0.2"))).toBe(1);
    const cli = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "status", "--admin", t.adminUrl],
      { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" } },
    ).catch((e: { stdout: string }) => e);
    expect(cli.stdout).toMatch(
      /127\.0\.0\.5:\d+ w0 down \[down by check since [^\]]*: status 500 \(expected 200-399\)\]/,
    );
    // A state change is logged once, not per probe.
    await sleep(3 * INTERVAL);
    expect(t.lb.find(/endpoint down by health check/).length).toBe(3);

    await pool.get("127.0.0.3").start();
    pool.get("127.0.0.4").setCheck("ok");
    pool.get("127.0.0.5").setCheck("ok");
    const recover = await until(t, all("up"), RECOVER_MS, "every endpoint up again");
    expect(recover.verdictMs).toBeLessThanOrEqual(RECOVER_MS + SLOP);
    expect(await served(t)).toEqual(new Set(IPS));
    expect(t.lb.find(/endpoint up again by health check/).length).toBe(3);
    console.log(
      `${mode}: detection verdict ${detect.verdictMs} ms (bound ${DETECT_MS}), applied ${detect.shownMs} ms; ` +
        `recovery verdict ${recover.verdictMs} ms (bound ${RECOVER_MS}), applied ${recover.shownMs} ms`,
    );
    await t.lb.stop();
  });

  it("after a hung endpoint is detected, no client request waits on it", async () => {
    await reset();
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": eps("127.0.0.2", "127.0.0.3") },
      servers: servers(pool.port),
      env,
    });
    await until(t, { "127.0.0.2": "up", "127.0.0.3": "up" }, 3000, "every endpoint up");
    pool.get("127.0.0.3").setCheck("hang-all");
    await until(t, { "127.0.0.3": "down" }, DETECT_MS, "the hung endpoint down");
    // A bounded load loop: 100 requests, each given 2 s; none may reach the hung endpoint or wait for it.
    const ms: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      const r = await get(`http://127.0.0.1:${t.sitePort}/x${i}`, { host: "a.test", timeoutMs: 2000 });
      ms.push(performance.now() - t0);
      expect(r.json<Echo>().backend).toBe("127.0.0.2");
    }
    ms.sort((a, b) => a - b);
    const p99 = ms[98] ?? Infinity;
    console.log(`${mode}: with a hung endpoint out, p99 ${p99.toFixed(1)} ms over 100 requests`);
    expect(p99).toBeLessThan(250);
    pool.get("127.0.0.3").setCheck("ok");
    await t.lb.stop();
  });

  it("a flapping endpoint goes down and up once per phase; one flapping per probe stays up", async () => {
    await reset();
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": eps("127.0.0.2", "127.0.0.3", "127.0.0.4") },
      servers: servers(pool.port),
      env,
    });
    await until(t, { "127.0.0.2": "up", "127.0.0.3": "up", "127.0.0.4": "up" }, 3000, "every endpoint up");
    // 200 and 500 by turns never reaches 3 failures in a row: the thresholds keep it in.
    pool.get("127.0.0.4").setCheck("flap");
    for (let phase = 0; phase < 2; phase++) {
      pool.get("127.0.0.3").setCheck("500");
      await until(t, { "127.0.0.3": "down" }, DETECT_MS, `down, phase ${phase}`);
      pool.get("127.0.0.3").setCheck("ok");
      await until(t, { "127.0.0.3": "up" }, RECOVER_MS, `up, phase ${phase}`);
    }
    expect((await healths(t))[`127.0.0.4:${pool.port}`]?.state).toBe("up");
    const logged = (re: RegExp, ip: string) => t.lb.find(re).filter((l) => l["endpoint"] === `${ip}:${pool.port}`);
    expect(logged(/endpoint down by health check/, "127.0.0.3").length).toBe(2);
    expect(logged(/endpoint up again by health check/, "127.0.0.3").length).toBe(2);
    expect(logged(/health check/, "127.0.0.4").length).toBe(0);
    await t.lb.stop();
  });

  it("backups serve when every primary is down; with everything down the route fails open and says so", async () => {
    await reset();
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": eps("127.0.0.2", "127.0.0.3"), "spare-api": eps("127.0.0.4") },
      servers: servers(pool.port, true),
      env,
    });
    await until(t, { "127.0.0.2": "up", "127.0.0.3": "up", "127.0.0.4": "up" }, 3000, "every endpoint up");
    pool.get("127.0.0.2").setCheck("500");
    pool.get("127.0.0.3").setCheck("500");
    await until(t, { "127.0.0.2": "down", "127.0.0.3": "down" }, DETECT_MS, "primaries down");
    // The apply after the verdict (a reload in reload mode) is done once the status shows it.
    expect(await served(t)).toEqual(new Set(["127.0.0.4"]));
    pool.get("127.0.0.4").setCheck("500");
    await until(t, { "127.0.0.4": "down" }, DETECT_MS, "backup down");
    const view = (await t.admin("/api/status")).json<View>();
    expect(view.servers[0]?.routes[0]?.failOpen).toMatch(/every endpoint is down by health check: all are tried/);
    // Fail open: the endpoints still answer, and the route uses them rather than 503.
    const seen = await served(t);
    expect(seen.has("127.0.0.2") || seen.has("127.0.0.3")).toBe(true);
    expect(
      sample((await t.admin("/metrics")).body, "nginx_lb_route_fail_open", { route: `a.test:${t.sitePort}/` }),
    ).toBe(1);
    await t.lb.stop();
  });
});

describe("dashboard in Chromium", () => {
  it("shows the dead endpoint down by check within the detection time, and a route failing open", async () => {
    await reset();
    const profile = await mkdtemp(join(tmpdir(), "nginx-lb-chromium-"));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
    try {
      const t = await startAdminLb({
        pool,
        endpoints: { "web-api": eps("127.0.0.2", "127.0.0.3") },
        servers: servers(pool.port),
      });
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(t.adminUrl, { timeout: 15_000 });
      const badge = (ip: string, state: string) =>
        page.locator(`[data-endpoint="${ip}:${pool.port}"] [data-health="${state}"]`);
      await badge("127.0.0.3", "up").waitFor({ timeout: 10_000 });
      const t0 = Date.now();
      await pool.get("127.0.0.3").stop();
      await badge("127.0.0.3", "down").waitFor({ timeout: DETECT_MS + 3000 });
      const shownMs = Date.now() - t0;
      console.log(`dashboard: endpoint down by check shown after ${shownMs} ms (verdict bound ${DETECT_MS} ms)`);
      expect(await badge("127.0.0.3", "down").textContent()).toBe("down by check");
      expect(await badge("127.0.0.2", "up").count()).toBe(1);
      pool.get("127.0.0.2").setCheck("500");
      await page.locator("[data-fail-open]").waitFor({ timeout: DETECT_MS + 3000 });
      expect(await page.locator("[data-fail-open]").textContent()).toMatch(/fail open/);
      expect(errors).toEqual([]);
      await t.lb.stop();
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
      await reset();
    }
  });
});

describe("probe sharing", () => {
  it("1,000 routes over 10 services: probes per interval equal the distinct endpoints", async () => {
    const ips = loopbackIps(20, 40);
    const shared = await startBackends(ips);
    try {
      const endpoints: Endpoints = Object.fromEntries(
        Array.from({ length: 10 }, (_, i) => [`s${i}-api`, eps(ips[2 * i] ?? "", ips[2 * i + 1] ?? "")]),
      );
      const interval = 500;
      const t = await startAdminLb({
        pool: shared,
        endpoints,
        servers: (sitePort) => [
          {
            domain_name: "a.test",
            frontend_port: sitePort,
            routes: Object.fromEntries(
              Array.from({ length: 1000 }, (_, i) => [
                `/r${i}`,
                { app: `s${i % 10}`, service: "api", port: shared.port, health_check: { interval: `${interval}ms` } },
              ]),
            ),
          },
        ],
        env: { NGINX_LB_ENDPOINTS_MODE: "dynamic" },
      });
      await sleep(2 * interval);
      const before = shared.backends.map((b) => b.checks());
      const windowMs = 10 * interval;
      await sleep(windowMs);
      const counts = shared.backends.map((b, i) => b.checks() - (before[i] ?? 0));
      const total = counts.reduce((a, b) => a + b, 0);
      const perInterval = total / (windowMs / interval);
      console.log(`probe sharing: ${total} probes in ${windowMs} ms, ${perInterval} per interval, 20 endpoints`);
      expect(perInterval).toBeGreaterThanOrEqual(20 * 0.85);
      expect(perInterval).toBeLessThanOrEqual(20 * 1.15);
      expect(Math.min(...counts)).toBeGreaterThanOrEqual(8);
      expect(Math.max(...counts)).toBeLessThanOrEqual(12);
      await t.lb.stop();
    } finally {
      await shared.close();
    }
  });
});
