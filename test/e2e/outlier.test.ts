import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sample, startAdminLb, type AdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx } from "../helpers/nginx.js";

/**
 * Outlier ejection as an operator sees it, through the real `nginx-lb run` in dynamic mode: an endpoint answering 500
 * to every request is ejected by nginx's balancer, and /api/status, /metrics, `nginx-lb status`, the dashboard and the
 * log say so (the log once per change); healthy again, it returns after its back-off.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const BAD = "127.0.0.3";

interface View {
  servers: {
    routes: {
      label: string;
      endpoints: { address: string; ejected?: { state: string; since: string; until: string; reason: string } }[];
    }[];
  }[];
}

let pool: BackendPool;
let t: AdminLb;

beforeAll(async () => {
  pool = await startBackends(IPS);
  t = await startAdminLb({
    pool,
    endpoints: { "web-api": Object.fromEntries(IPS.map((ip) => [ip, { weight: 1 }])) },
    servers: (sitePort) => [
      {
        domain_name: "a.test",
        frontend_port: sitePort,
        routes: { "/": { app: "web", service: "api", port: pool.port } },
      },
    ],
    args: ["--endpoints-mode", "dynamic", "--outlier-ejection", "3,20s,80s,50%"],
  });
});

afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

const ejectedOf = async (ip: string) => {
  const view = (await t.admin("/api/status")).json<View>();
  return view.servers[0]?.routes[0]?.endpoints.find((e) => e.address === `${ip}:${pool.port}`)?.ejected;
};

describe("outlier ejection through nginx-lb run", () => {
  it("shows an endpoint answering 500 as ejected by traffic everywhere, logs it once, and takes it back when healthy", async () => {
    const bad = pool.get(BAD);
    bad.setCheck("500-all");
    const profile = await mkdtemp(join(tmpdir(), "nginx-lb-chromium-"));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(t.adminUrl, { timeout: 15_000 });

      // Three 500s in a row at the bad one, with two workers sharing the count: a few rounds of three requests.
      const ejected = await eventually(
        async () => {
          for (let i = 0; i < 3; i++) await t.site(`/x${i}`);
          return ejectedOf(BAD);
        },
        15_000,
        "the 500 endpoint shown ejected in /api/status",
      );
      expect(ejected).toMatchObject({ state: "ejected" });
      expect(ejected.reason).toMatch(/^\d+ failed requests in a row \(last: answered 500\); ejected for 20 s$/);
      expect(Date.parse(ejected.until) - Date.parse(ejected.since)).toBe(20_000);
      expect(await ejectedOf("127.0.0.2")).toBeUndefined();

      const metrics = (await t.admin("/metrics")).body;
      const label = (ip: string) => ({ route: `a.test:${t.sitePort}/`, endpoint: `${ip}:${pool.port}` });
      expect(sample(metrics, "nginx_lb_endpoint_ejected", label(BAD))).toBe(1);
      expect(sample(metrics, "nginx_lb_endpoint_ejected", label("127.0.0.2"))).toBe(0);

      const cli = await promisify(execFile)(
        process.execPath,
        ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "status", "--admin", t.adminUrl],
        { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" } },
      ).catch((e: { stdout: string }) => e);
      expect(cli.stdout).toMatch(
        /127\.0\.0\.3:\d+ w1 \[ejected by traffic since [^\]]* until [^\]]*: \d+ failed requests in a row \(last: answered 500\)[^\]]*\]/,
      );

      const badge = page.locator(`[data-endpoint="${BAD}:${pool.port}"] [data-ejected="1"]`);
      await badge.waitFor({ timeout: 10_000 });
      expect(await badge.textContent()).toBe("ejected by traffic");
      expect(await page.locator(`[data-endpoint="127.0.0.2:${pool.port}"] [data-ejected]`).count()).toBe(0);

      // Healthy again: after the back-off its next request succeeds and it serves; the return is logged once.
      bad.setCheck("ok");
      const before = bad.requests();
      await eventually(
        async () => {
          await t.site("/again");
          return bad.requests() > before && (await ejectedOf(BAD)) === undefined;
        },
        40_000,
        "the endpoint back in /api/status",
      );
      await badge.waitFor({ state: "detached", timeout: 10_000 });
      await eventually(async () => t.lb.find(/endpoint back from ejection/).length > 0, 5_000, "the return logged");
      const logged = t.lb.find(/endpoint ejected by traffic/);
      expect(logged.length).toBe(1);
      expect(logged[0]).toMatchObject({ route: `a.test:${t.sitePort}/`, endpoint: `${BAD}:${pool.port}` });
      expect(t.lb.find(/endpoint back from ejection/).length).toBe(1);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
      bad.setCheck("ok");
    }
  }, 120_000);
});
