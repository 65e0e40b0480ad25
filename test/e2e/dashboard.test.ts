import { mkdir, readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { launchBrowser, type Browser } from "../helpers/browser.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx } from "../helpers/nginx.js";

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
