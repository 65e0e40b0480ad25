import { spawn, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEjections, type EjectionRecord } from "../../src/health/ejections.js";
import { readEjections } from "../../src/nginx/ejections-read.js";
import { EJECTIONS_PATH } from "../../src/render/dynamic.js";
import { startAddressBackends, type BackendPool } from "../helpers/backends.js";
import { get, hostGet } from "../helpers/http.js";
import { services } from "../helpers/model.js";
import { serveNginx, type ServedNginx } from "../helpers/nginx.js";
import { sleep, waitFor } from "../helpers/wait.js";

/**
 * Passive outlier ejection in the dynamic balancer, against real nginx (2 workers, so the failure count and the
 * ejection must be shared through the dict) and real backends on loopback: one that answers 500 to every request,
 * one that refuses, one whose connections hang (a stopped process with a full accept queue: connects time out).
 */

const HOST = "o.test";
const BASE = 1500;
const OUTLIER = { errors: 5, baseMs: BASE, maxMs: 4 * BASE, maxPercent: 50 };
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"];

let pool: BackendPool;
let ngx: ServedNginx;

const eps = (...ips: string[]) => Object.fromEntries(ips.map((ip) => [ip, { weight: 1 }]));

beforeAll(async () => {
  pool = await startAddressBackends(IPS);
  ngx = await serveNginx({
    mode: "dynamic",
    outlier: OUTLIER,
    services: (p) =>
      services(HOST, p, [
        { prefix: "/", app: "three", service: "web", port: pool.port },
        { prefix: "/two", app: "two", service: "web", port: pool.port },
        { prefix: "/one", app: "one", service: "web", port: pool.port },
      ]),
    backends: {
      "three-web": eps("127.0.0.2", "127.0.0.3", "127.0.0.4"),
      "two-web": eps("127.0.0.5", "127.0.0.6"),
      "one-web": eps("127.0.0.7"),
    },
  });
});

afterAll(async () => {
  await ngx?.stop();
  await pool?.close();
});

/** nginx's ejection records now, through the production reader and parser. */
async function state(n: ServedNginx = ngx): Promise<{ now: number; records: EjectionRecord[] }> {
  const read = await readEjections(n.target);
  if (!read.ok) throw new Error(read.why);
  const parsed = parseEjections(read.text);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return { now: parsed.value.now, records: [...parsed.value.ejections] };
}

const recordOf = async (ip: string, n?: ServedNginx) => (await state(n)).records.find((r) => r.ip === ip);

/** `n` sequential requests to `path`; the statuses seen. */
async function send(path: string, n: number, port = ngx.port): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await hostGet(port, HOST, path)).status);
  return out;
}

describe("outlier ejection (dynamic mode)", () => {
  it("ejects an endpoint that answers 500 to every request, for a back-off doubled when it fails again, until it is healthy", async () => {
    const bad = pool.get("127.0.0.3");
    bad.setCheck("500-all");
    // Round robin over three: 5 failures in a row at the bad one take about 15 requests.
    await waitFor(
      "the 500 endpoint to be ejected",
      async () => (await send("/", 3), await recordOf("127.0.0.3")),
      20_000,
    );
    const first = await recordOf("127.0.0.3");
    expect(first).toMatchObject({ level: 1, last: "500", returned: false, port: pool.port });
    expect(first?.failures).toBeGreaterThanOrEqual(OUTLIER.errors);
    expect((first?.until ?? 0) - (first?.since ?? 0)).toBe(BASE);

    // While ejected, no worker sends it anything; the others answer.
    const before = bad.requests();
    const statuses: number[] = [];
    while (Date.now() < (first?.until ?? 0) - 400 && statuses.length < 40) statuses.push(...(await send("/", 1)));
    expect(statuses.length).toBeGreaterThan(0);
    expect(bad.requests() - before).toBe(0);
    expect(new Set(statuses)).toEqual(new Set([200]));

    // After the back-off it is tried again; still failing, it is ejected at once for twice as long.
    await sleep(Math.max(0, (first?.until ?? 0) - Date.now() + 50));
    const second = await waitFor(
      "a second ejection",
      async () => {
        await send("/", 1);
        const r = await recordOf("127.0.0.3");
        return r?.level === 2 ? r : null;
      },
      10_000,
    );
    expect(second).toMatchObject({ level: 2, failures: 1, returned: false });
    expect((second?.until ?? 0) - (second?.since ?? 0)).toBe(2 * BASE);
    // One request decided (a second may have been chosen by the other worker before the record was stored).
    expect(bad.requests() - before).toBeGreaterThanOrEqual(1);
    expect(bad.requests() - before).toBeLessThanOrEqual(2);

    // Healthy again: after this back-off its first request succeeds and it is back in rotation for good.
    bad.setCheck("ok");
    await sleep(Math.max(0, (second?.until ?? 0) - Date.now() + 50));
    await waitFor("its return", async () => (await send("/", 1), (await recordOf("127.0.0.3"))?.returned), 10_000);
    const back = bad.requests();
    await send("/", 9);
    expect(bad.requests() - back).toBeGreaterThanOrEqual(2);
    expect((await recordOf("127.0.0.3"))?.level).toBe(2);
  }, 60_000);

  it("never ejects more than half of a set: with both endpoints failing, one stays", async () => {
    pool.get("127.0.0.5").setCheck("500-all");
    pool.get("127.0.0.6").setCheck("500-all");
    try {
      const statuses = await send("/two", 30);
      expect(new Set(statuses)).toEqual(new Set([500]));
      const { now, records } = await state();
      const ejected = records.filter((r) => ["127.0.0.5", "127.0.0.6"].includes(r.ip) && r.until > now);
      expect(ejected.length).toBe(1);
      // The one left serves every request meanwhile.
      const kept = pool.get(ejected[0]?.ip === "127.0.0.5" ? "127.0.0.6" : "127.0.0.5");
      const before = kept.requests();
      await send("/two", 5);
      expect(kept.requests() - before).toBe(5);
    } finally {
      pool.get("127.0.0.5").setCheck("ok");
      pool.get("127.0.0.6").setCheck("ok");
    }
  });

  it("never ejects the only endpoint of a route", async () => {
    pool.get("127.0.0.7").setCheck("500-all");
    try {
      await send("/one", 12);
      expect(await recordOf("127.0.0.7")).toBeUndefined();
    } finally {
      pool.get("127.0.0.7").setCheck("ok");
    }
  });

  it("answers its state only with the push token, and only to GET", async () => {
    const url = `http://127.0.0.1:${ngx.controlPort}${EJECTIONS_PATH}`;
    expect((await get(url)).status).toBe(401);
    expect((await get(url, { headers: { "x-nginx-lb-token": "0".repeat(32) } })).status).toBe(401);
    const post = await get(url, { method: "POST", headers: { "x-nginx-lb-token": ngx.pushToken } });
    expect(post.status).toBe(405);
  });
});

/** A listener that accepts no connection: a stopped process whose accept queue the test fills, so connects hang. */
async function hungListener(ip: string, port: number): Promise<{ stop(): void }> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      "-e",
      `require("net").createServer().listen({ host: "${ip}", port: ${port}, backlog: 1 }, () => console.log("up"))`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`listener exited ${code}`)));
  });
  child.kill("SIGSTOP");
  const fillers: Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const s = connect({ host: ip, port });
    s.on("error", () => undefined);
    fillers.push(s);
  }
  await sleep(200);
  return {
    stop() {
      for (const s of fillers) s.destroy();
      child.kill("SIGKILL");
    },
  };
}

describe("outlier ejection of endpoints that time out or refuse", () => {
  it("counts connect timeouts and connection errors as failures (the request itself is retried on another endpoint)", async () => {
    const ip = "127.0.0.9";
    const refusing = "127.0.0.8";
    const hung = await hungListener(ip, pool.port);
    const n = await serveNginx({
      mode: "dynamic",
      // Two in a row: each worker skips a peer for 10 s after its own first timeout, so a worker sees few of them.
      outlier: { ...OUTLIER, errors: 2 },
      services: (p) => services(HOST, p, [{ prefix: "/", app: "t", service: "web", port: pool.port }]),
      backends: { "t-web": eps("127.0.0.2", "127.0.0.4", refusing, ip) },
    });
    try {
      // Concurrent requests reach the hung endpoint from both workers before either marks it failed.
      const statuses = await Promise.all(
        Array.from({ length: 24 }, () => hostGet(n.port, HOST, "/").then((r) => r.status)),
      );
      expect(new Set(statuses)).toEqual(new Set([200]));
      // The log phase runs once the answer is out: give it a moment.
      const timedOut = await waitFor("the hung endpoint ejected", () => recordOf(ip, n), 3_000);
      expect(timedOut).toMatchObject({ last: "timeout", level: 1 });
      // Sequential requests: each worker meets the refusing endpoint once (then skips it for 10 s on its own).
      const refused = await waitFor(
        "the refusing endpoint ejected",
        async () => (await send("/", 2, n.port), await recordOf(refusing, n)),
        25_000,
      );
      // Ejected for connection errors. Its level may already be past 1: the concurrent requests above can eject it
      // once, and after its 1.5 s back-off the polling requests eject it again before the first read sees it.
      expect(refused?.last).toBe("error");
      expect(refused?.level).toBeGreaterThanOrEqual(1);
      expect(new Set(await send("/", 10, n.port))).toEqual(new Set([200]));
    } finally {
      hung.stop();
      await n.stop();
    }
  }, 60_000);
});
