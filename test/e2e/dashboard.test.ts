import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { launchBrowser, type Browser } from "../helpers/browser.js";
import { eventually, sleep, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx, tempDir } from "../helpers/nginx.js";

/** The dashboard in a real headless Chromium (Debian's), against a real `nginx-lb run`. */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ARTIFACTS = join(ROOT, "test-artifacts");
let pool: BackendPool;
let launched: Browser;
let browser: BrowserContext;

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
  launched = await launchBrowser();
  browser = launched.context;
});
afterAll(async () => {
  await launched?.close();
  await stopAllControllers();
  await pool?.close();
  await cleanupNginx();
});

describe("dashboard", () => {
  it("shows the routes and endpoints of the running config, and a registry change within seconds", async () => {
    const t = await startAdminLb({
      pool,
      endpoints: {
        "web-api": { "127.0.0.2": { weight: 3 } },
        "api-api": { "127.0.0.3": { weight: 1 } },
        "spare-api": { "127.0.0.4": { weight: 1 } },
      },
    });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(t.adminUrl, { timeout: 15_000 });

    const route = (prefix: string) => page.locator(`tr[data-route="a.test:${t.sitePort}${prefix}"]`);
    for (const prefix of ["/", "/api", "/gone"]) await route(prefix).waitFor({ timeout: 10_000 });
    expect(await route("/").locator(`[data-endpoint="127.0.0.2:${pool.port}"]`).textContent()).toContain("w3");
    expect(await route("/api").locator(`[data-endpoint="127.0.0.4:${pool.port}"]`).getAttribute("data-role")).toBe(
      "backup",
    );
    expect(await route("/gone").textContent()).toContain("no endpoint");
    expect(await page.locator("#health").textContent()).toMatch(/ready.*nginx pid \d+.*routing file valid/);

    // Traffic through nginx shows as a request rate and, for the route without endpoints, an error rate.
    for (let i = 0; i < 30; i++) await t.site(i % 3 === 0 ? "/gone" : `/page${i}`);
    const cell = (prefix: string, attr: string) => route(prefix).locator(`td[${attr}]`).getAttribute(attr);
    await eventually(async () => Number(await cell("/", "data-rate")) > 0, 10_000, "request rate of / on the page");
    await eventually(async () => (await cell("/gone", "data-errors")) === "1", 10_000, "error rate of /gone");
    const chip = route("/").locator(`[data-endpoint="127.0.0.2:${pool.port}"] [data-ep-rate]`);
    await eventually(async () => Number(await chip.getAttribute("data-ep-rate")) > 0, 10_000, "the endpoint's req/s");

    // A registry change (the backends file): a new endpoint and a drained one, live on the page within seconds.
    const changedAt = Date.now();
    await t.setEndpoints({
      "web-api": { "127.0.0.2": { weight: 0 }, "127.0.0.3": { weight: 5 } },
      "api-api": { "127.0.0.3": { weight: 1 } },
      "spare-api": { "127.0.0.4": { weight: 1 } },
      "gone-api": { "127.0.0.4": { weight: 2 } },
    });
    await route("/").locator(`[data-endpoint="127.0.0.3:${pool.port}"]`).waitFor({ timeout: 5_000 });
    await route("/gone").locator(`[data-endpoint="127.0.0.4:${pool.port}"]`).waitFor({ timeout: 5_000 });
    expect(Date.now() - changedAt).toBeLessThan(5_000);
    expect(await route("/").locator(`[data-endpoint="127.0.0.2:${pool.port}"]`).getAttribute("data-role")).toBe("down");
    expect(await page.locator("#applies tr").first().textContent()).toMatch(/applied\s*(reload|push)/);

    // An invalid services.json: the page names the error by its JSON path; the routes in force stay listed.
    const valid = await readFile(t.services, "utf8");
    await writeFile(t.services, valid.replace(/"frontend_port": \d+/, '"frontend_port": "eighty"'));
    await page.locator("#problems", { hasText: "servers[0].frontend_port" }).waitFor({ timeout: 5_000 });
    expect(await page.locator("#health").textContent()).toContain("routing file invalid");
    expect(await route("/api").count()).toBe(1);
    await writeFile(t.services, valid);
    await page.locator("#health", { hasText: "routing file valid" }).waitFor({ timeout: 5_000 });

    // An invalid backends file (the registry): named in the header and listed with its path; routes stay.
    const endpointsNow = {
      "web-api": { "127.0.0.2": { weight: 0 }, "127.0.0.3": { weight: 5 } },
      "api-api": { "127.0.0.3": { weight: 1 } },
      "spare-api": { "127.0.0.4": { weight: 1 } },
      "gone-api": { "127.0.0.4": { weight: 2 } },
    };
    await t.setEndpoints({ ...endpointsNow, "web-api": { "not-an-ip": { weight: 1 } } });
    const registryError = page.locator('#problems [data-problem="error"][data-source="registry"]');
    await registryError.waitFor({ timeout: 5_000 });
    expect(await registryError.textContent()).toContain('["web-api"]["not-an-ip"]');
    expect(await page.locator("#health").textContent()).toContain("registry backends-file invalid");
    expect(await route("/").locator(`[data-endpoint="127.0.0.3:${pool.port}"]`).count()).toBe(1);
    await t.setEndpoints(endpointsNow);
    await page.locator("#health", { hasText: "registry backends-file" }).waitFor({ timeout: 5_000 });
    await eventually(
      async () => !(await page.locator("#health").textContent())?.includes("invalid"),
      5_000,
      "the registry valid again on the page",
    );
    expect(await registryError.count()).toBe(0);

    for (let i = 0; i < 20; i++) await t.site(`/after${i}`);
    await page.waitForTimeout(1500);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
    expect(errors).toEqual([]);
  });

  it("charts a route's traffic and latency, and shows a dead endpoint down by check within the detection time", async () => {
    const INTERVAL = 300;
    const check = { interval: `${INTERVAL}ms`, timeout: "150ms", healthy: 2, unhealthy: 3 };
    // The verdict needs `unhealthy` failed probes an interval apart, plus up to one interval for the probes' phase.
    const DETECT_MS = (check.unhealthy + 1) * INTERVAL;
    const token = randomBytes(24).toString("hex");
    const tokenFile = join(await tempDir("nginx-lb-dash-token-"), "token");
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } },
      servers: (sitePort) => [
        {
          domain_name: "a.test",
          frontend_port: sitePort,
          routes: {
            "/": { app: "web", service: "api", port: pool.port, health_check: check },
            "/gone": { app: "gone", service: "api", port: pool.port },
          },
        },
      ],
      args: ["--admin-token-file", tokenFile],
    });
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const status = (await t.admin("/api/status", auth)).json<{
      servers: { routes: { prefix: string; upstream: string }[] }[];
    }>();
    const upstream = status.servers[0]?.routes.find((r) => r.prefix === "/")?.upstream ?? "";
    expect(upstream).toMatch(/^nlb_[0-9a-f]{16}$/);

    // The series API: the same token as /api/status, the upstream grammar, 404 for a route not in force.
    const seriesPath = `/api/routes/${upstream}/series`;
    expect((await t.admin(seriesPath)).status).toBe(401);
    expect((await t.admin("/api/routes/..%2fetc/series", auth)).status).toBe(400);
    expect((await t.admin("/api/routes/nlb_0000000000000000/series", auth)).status).toBe(404);
    expect((await t.admin(`/api/routes/${upstream}/other`, auth)).status).toBe(404);

    // Traffic through / (and 503s through /gone) for a bounded few seconds: at least one 5 s bucket closes with it.
    const until = Date.now() + 6_000;
    for (let i = 0; i < 2_000 && Date.now() < until; i++) {
      expect((await t.site(`/c${i}`)).status).toBe(200);
      if (i % 5 === 0) expect((await t.site("/gone")).status).toBe(503);
      await sleep(5);
    }
    interface Series {
      bucketSeconds: number;
      end: string | null;
      requestsPerSecond: (number | null)[];
      errorsPerSecond: (number | null)[];
      p50Ms: (number | null)[];
      p99Ms: (number | null)[];
    }
    const fetched = async (u: string) => (await t.admin(`/api/routes/${u}/series`, auth)).json<Series>();
    await eventually(
      async () => {
        const known = (await fetched(upstream)).requestsPerSecond.filter((v) => v !== null);
        return known.length > 1 && Math.max(...known) > 0;
      },
      15_000,
      "two buckets in the series of /, one with requests",
    );
    const api = await fetched(upstream);
    expect(api.bucketSeconds).toBe(5);
    expect(api.requestsPerSecond).toHaveLength(180);
    expect(api.p50Ms.some((v) => v !== null && v > 0)).toBe(true);
    expect(api.errorsPerSecond.every((v) => v === null || v === 0)).toBe(true);
    const gone = status.servers[0]?.routes.find((r) => r.prefix === "/gone")?.upstream ?? "";
    await eventually(
      async () => (await fetched(gone)).errorsPerSecond.some((v) => v !== null && v > 0),
      10_000,
      "5xx/s of /gone",
    );

    await browser.addCookies([{ name: "nlb_admin_token", value: token, url: t.adminUrl }]);
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(t.adminUrl, { timeout: 15_000 });
    const row = page.locator(`tr[data-route="a.test:${t.sitePort}/"]`);
    await row.locator("td").first().click({ timeout: 10_000 });
    const panel = page.locator("#chart-panel");
    await panel.locator('svg[data-chart="rps"]').waitFor({ timeout: 10_000 });
    expect(await panel.getAttribute("data-upstream")).toBe(upstream);
    expect(await panel.locator("#chart-route").textContent()).toContain(`a.test:${t.sitePort}/`);
    const line = (chart: string, series: string) =>
      panel.locator(`svg[data-chart="${chart}"] path.line[data-series="${series}"]`);
    const attr = async (chart: string, series: string, name: string) =>
      Number(await line(chart, series).getAttribute(name));
    expect(await attr("rps", "req/s", "data-points")).toBeGreaterThan(1);
    expect(await attr("rps", "req/s", "data-max")).toBeGreaterThan(0);
    // The drawn line really leaves the x axis: some point is above its bottom (y of 0 req/s).
    const d = (await line("rps", "req/s").getAttribute("d")) ?? "";
    const ys = [...d.matchAll(/[ML][\d.]+ ([\d.]+)/g)].map((m) => Number(m[1]));
    expect(ys.length).toBeGreaterThan(1);
    expect(Math.min(...ys)).toBeLessThan(Math.max(...ys));
    expect(await attr("latency", "p50", "data-max")).toBeGreaterThan(0);
    expect(await attr("latency", "p99", "data-max")).toBeGreaterThanOrEqual(await attr("latency", "p50", "data-max"));
    expect(await attr("errors", "5xx/s", "data-max")).toBe(0);
    // Axes: units on the y axes, minutes ago on the time axis, a legend for the two latency lines.
    const units = await panel.locator("svg.chart text.unit").allTextContents();
    expect(units).toEqual(["req/s", "5xx/s", "ms"]);
    const xTicks = await panel.locator('svg[data-chart="rps"] text.tick.x').allTextContents();
    expect(xTicks).toEqual(["now", "\u22125 min", "\u221210 min", "\u221215 min"]);
    const yTicks = (await panel.locator('svg[data-chart="rps"] text.tick.y').allTextContents()).map(Number);
    expect(yTicks.length).toBeGreaterThanOrEqual(2);
    expect(yTicks[0]).toBe(0);
    expect(yTicks.at(-1)).toBeGreaterThanOrEqual(await attr("rps", "req/s", "data-max"));
    expect(await panel.locator('svg[data-chart="latency"] text.legend').allTextContents()).toEqual(["p50", "p99"]);
    expect(await panel.locator("#chart-span").textContent()).toMatch(/last 15 min, 5 s buckets, to \d\d:\d\d:\d\d/);
    // Hovering a chart reads one bucket's time and value with its unit.
    const plot = panel.locator('svg[data-chart="rps"] rect');
    const plotBox = await plot.boundingBox();
    await plot.hover({ position: { x: (plotBox?.width ?? 2) - 1, y: 10 } }); // the newest bucket
    expect(await panel.locator('svg[data-chart="rps"] text.readout').textContent()).toMatch(
      /^\d\d:\d\d:\d\d {2}[\d.]+ req\/s$/,
    );
    // The panel refreshes while open: a new bucket end within two buckets.
    const end = await panel.getAttribute("data-end");
    await eventually(async () => (await panel.getAttribute("data-end")) !== end, 12_000, "the charts refreshed");

    await page.mouse.move(0, 0);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "dashboard-charts.png") });

    // A dead endpoint: badged down by check on the page within the detection time (plus slack for a loaded box).
    const badge = (ip: string, state: string) =>
      row.locator(`[data-endpoint="${ip}:${pool.port}"] [data-health="${state}"]`);
    await badge("127.0.0.3", "up").waitFor({ timeout: 10_000 });
    const dead = pool.get("127.0.0.3");
    const t0 = Date.now();
    await dead.stop();
    try {
      await badge("127.0.0.3", "down").waitFor({ timeout: DETECT_MS + 3_000 });
      console.log(
        `dashboard: endpoint down by check shown after ${Date.now() - t0} ms (verdict bound ${DETECT_MS} ms)`,
      );
      expect(await badge("127.0.0.3", "down").textContent()).toBe("down by check");
      expect(await badge("127.0.0.2", "up").count()).toBe(1);
      // The charts stay open through the status pushes that redraw the rows.
      expect(await panel.isVisible()).toBe(true);
      expect(await row.getAttribute("class")).toContain("selected");
    } finally {
      await dead.start();
    }

    await panel.locator("#chart-close").click();
    expect(await panel.isHidden()).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
    await t.lb.stop();
  });

  it("falls back to polling when every event-stream slot is taken, and still shows the status", async () => {
    const t = await startAdminLb({ pool, endpoints: { "web-api": { "127.0.0.2": { weight: 1 } } } });
    // Another local user holds every stream open to clients without the token (28: 8 per source address).
    const held: http.ClientRequest[] = [];
    try {
      for (let i = 0; i < 28; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.get(
            { host: "127.0.0.1", port: t.adminPort, path: "/api/events", localAddress: `127.0.0.${10 + (i % 4)}` },
            (res) => resolve(res.statusCode ?? 0),
          );
          req.on("error", reject);
          held.push(req);
        });
        expect(status).toBe(200);
      }
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(t.adminUrl, { timeout: 15_000 });
      await page.locator("#conn", { hasText: "polling" }).waitFor({ timeout: 10_000 });
      await page.locator(`tr[data-route="a.test:${t.sitePort}/"]`).waitFor({ timeout: 10_000 });
      expect(await page.locator("#health").textContent()).toMatch(/ready/);
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      for (const r of held) r.destroy();
    }
  });
});
