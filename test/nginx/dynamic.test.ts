import { connect } from "node:net";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendSet } from "../../src/model/backends.js";
import { ipFamily } from "../../src/model/ip.js";
import { findNginx } from "../../src/nginx/binary.js";
import { partialPushBody, PushError, pushBody, pushedVersion } from "../../src/nginx/endpoints-push.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { detectLuaSupport } from "../../src/nginx/lua-support.js";
import { planRoutes, renderNginxConf } from "../../src/render/index.js";
import { type Backend, startAddressBackends as startBackends } from "../helpers/backends.js";
import { hostGet as get, tally } from "../helpers/http.js";
import { services } from "../helpers/model.js";
// Pushes by hand speak as the controller: with the push token the harness rendered (see pushAsController).
import {
  postAsController as postRaw,
  pushAsController as pushEndpoints,
  serveNginx as startNginx,
  syncAsController as syncEndpoints,
  type ServedNginx as Nginx,
} from "../helpers/nginx.js";

const HOST = "dyn.test";
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

let port = 0;
let backends: Backend[] = [];
let dyn: Nginx;
let rel: Nginx;

/** Routes: `/` balances app-web with backup-web; `/empty` never has an endpoint. */
const model = (frontendPort: number) =>
  services(HOST, frontendPort, [
    { prefix: "/", app: "app", service: "web", port, backup: { app: "backup", service: "web", port } },
    { prefix: "/empty", app: "none", service: "web", port },
  ]);

const set = (primaries: Record<string, number>, backups: Record<string, number> = {}): BackendSet => ({
  "app-web": Object.fromEntries(Object.entries(primaries).map(([ip, weight]) => [ip, { weight }])),
  "backup-web": Object.fromEntries(Object.entries(backups).map(([ip, weight]) => [ip, { weight }])),
});

beforeAll(async () => {
  ({ port, backends } = await startBackends(IPS));
  dyn = await startNginx({ mode: "dynamic", services: model, backends: {} });
  rel = await startNginx({ mode: "reload", services: model, backends: set({ "127.0.0.2": 1 }) });
});

afterAll(async () => {
  await dyn?.stop();
  await rel?.stop();
  await Promise.all(backends.map((b) => b.close()));
});

describe("dynamic endpoints rendering", () => {
  it("puts no endpoint in nginx.conf, and reload mode is the default", () => {
    const desired = { services: model(8080), backends: set({ "127.0.0.2": 1 }, { "127.0.0.9": 1 }) };
    const base = { dir: "/tmp/nlb", controlPort: 9999 };
    const dynamic = renderNginxConf(desired, { ...base, endpointsMode: "dynamic", luaSource: balancerLuaSource() });
    expect(dynamic.conf).not.toContain("127.0.0.2");
    expect(dynamic.conf).not.toContain("127.0.0.9");
    expect(dynamic.conf).toContain("balancer_by_lua_block");
    expect(dynamic.files.map((f) => f.path)).toContain("lua/nginx_lb_balancer.lua");
    const reload = renderNginxConf(desired, base);
    expect(renderNginxConf(desired, { ...base, endpointsMode: "reload" }).conf).toBe(reload.conf);
    expect(reload.conf).toContain("server 127.0.0.2:");
    expect(reload.conf).not.toContain("lua");
  });

  it("detects that this nginx can load the Lua module, and says why when it cannot", async () => {
    expect(await detectLuaSupport(findNginx())).toEqual({ ok: true });
    const missing = await detectLuaSupport(findNginx(), "/nonexistent/modules");
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.reason).toMatch(/ngx_http_lua_module|ndk_http_module/);
  });
});

describe("dynamic endpoints through real nginx", () => {
  it("answers an empty set with the same 503 as reload mode", async () => {
    const fromReload = await get(rel.port, HOST, "/empty/x");
    const fromDynamic = await get(dyn.port, HOST, "/empty/x");
    expect(fromReload.status).toBe(503);
    expect(fromDynamic).toEqual(fromReload);
    expect(fromDynamic.body).toBe("no endpoint for route /empty (none-web)\n");
    // A route whose set was pushed empty (or never pushed) answers the same way.
    await dyn.push(set({}));
    expect(await get(dyn.port, HOST, "/")).toEqual({
      status: 503,
      body: "no endpoint for route / (app-web)\n",
      contentType: "text/plain",
    });
  });

  it("balances 1:3 weights over 1,000 requests", async () => {
    await dyn.push(set({ "127.0.0.2": 1, "127.0.0.3": 3 }));
    const counts = await tally(dyn.port, HOST, 1000);
    expect([...counts.keys()].sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
    const heavy = (counts.get("127.0.0.3") ?? 0) / 1000;
    expect(heavy).toBeGreaterThan(0.7);
    expect(heavy).toBeLessThan(0.8);
  });

  it("sends nothing to a weight-0 endpoint, nor to a backup while a primary is up", async () => {
    await dyn.push(set({ "127.0.0.2": 1, "127.0.0.3": 0 }, { "127.0.0.4": 1 }));
    const counts = await tally(dyn.port, HOST, 200);
    expect(Object.fromEntries(counts)).toEqual({ "127.0.0.2": 200 });
  });

  it("keeps upstream connections alive", async () => {
    await dyn.push(set({ "127.0.0.5": 1 }));
    const before = backends[3]?.connections() ?? 0;
    const counts = await tally(dyn.port, HOST, 100);
    expect(counts.get("127.0.0.5")).toBe(100);
    // Two workers: without keepalive this would be 100 connections.
    expect((backends[3]?.connections() ?? 0) - before).toBeLessThanOrEqual(4);
  });

  it("never serves through the control API on a frontend port, and the control port is loopback-only", async () => {
    await dyn.push(set({ "127.0.0.2": 1 }));
    const stored = await pushedVersion({ port: dyn.controlPort });
    const body = JSON.stringify({ version: 999, upstreams: {} });
    const viaFrontend = await postRaw(dyn.port, body, "/nginx-lb/endpoints", HOST);
    expect(viaFrontend.body).toBe("127.0.0.2"); // the route's backend answered, not the push endpoint
    expect(await pushedVersion({ port: dyn.controlPort })).toBe(stored);
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(dyn.controlPort, "127.0.0.2");
      s.on("connect", () => (s.destroy(), resolve(false)));
      s.on("error", () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  it("rejects bad pushes with 4xx and keeps the previous set", async () => {
    await dyn.push(set({ "127.0.0.3": 1 }));
    const stored = await pushedVersion({ port: dyn.controlPort });
    const ep = (o: Record<string, unknown>) =>
      JSON.stringify({
        version: 12345,
        upstreams: { nlb_0123456789abcdef: [{ ip: "127.0.0.2", port, weight: 1, backup: false, ...o }] },
      });
    const bad: [string, string | Buffer][] = [
      ["truncated JSON", '{"version": 1, "upstreams": {'],
      ["not JSON", "hello"],
      ["trailing garbage", '{"version": 1, "upstreams": {}} x'],
      ["array body", "[]"],
      ["negative version", '{"version": -1, "upstreams": {}}'],
      ["host name", ep({ ip: "backend.example" })],
      ["ip with port", ep({ ip: "127.0.0.2:80" })],
      ["octet over 255", ep({ ip: "127.0.0.256" })],
      ["nginx syntax in ip", ep({ ip: "127.0.0.2; }" })],
      ["bad IPv6", ep({ ip: "fe80::1::2" })],
      ["port 0", ep({ port: 0 })],
      ["port 70000", ep({ port: 70000 })],
      ["fractional weight", ep({ weight: 1.5 })],
      ["string weight", ep({ weight: "5" })],
      ["weight over the maximum", ep({ weight: 1001 })],
      ["non-boolean backup", ep({ backup: "yes" })],
      ["bad upstream name", JSON.stringify({ version: 1, upstreams: { 'evil\u0001name"': [] } })],
      ["oversize body", Buffer.alloc(17 * 1024 * 1024, 0x20)],
    ];
    for (const [what, body] of bad) {
      const r = await postRaw(dyn.controlPort, body);
      expect(r.status, `${what}: ${r.body}`).toBeGreaterThanOrEqual(400);
      expect(r.status, what).toBeLessThan(500);
      if (what !== "oversize body") expect(typeof JSON.parse(r.body).error, `${what}: ${r.body}`).toBe("string");
    }
    expect(await pushedVersion({ port: dyn.controlPort })).toBe(stored);
    expect(Object.fromEntries(await tally(dyn.port, HOST, 20))).toEqual({ "127.0.0.3": 20 });
  });

  it("accepts exactly the addresses the registry accepts (the Lua validator agrees with model/ip.ts)", async () => {
    const ng = await startNginx({ mode: "dynamic", services: model, backends: {} });
    try {
      const addresses = [
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.",
        "1.2.3.04",
        "1.2.3.-4",
        " 1.2.3.4",
        "::",
        "::1",
        "1::",
        "fe80::1",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "::ffff:1.2.3.4",
        "64:ff9b::10.0.0.1",
        "::ffff:1.2.3",
        "12345::1",
        "fe80::1%eth0",
        "[::1]",
        "g::1",
        "FE80::ABCD",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        ":1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:",
      ];
      let version = 1;
      for (const ip of addresses) {
        const body = JSON.stringify({
          version: ++version,
          upstreams: { nlb_0123456789abcdef: [{ ip, port: 80, weight: 1, backup: false }] },
        });
        const r = await postRaw(ng.controlPort, body);
        expect(r.status === 200, `${JSON.stringify(ip)}: nginx answered ${r.status} ${r.body}`).toBe(
          ipFamily(ip) !== null,
        );
      }
    } finally {
      await ng.stop();
    }
  });

  it("accepts IPv6 literals and answers with the version it stored", async () => {
    const body = JSON.stringify({
      version: 777,
      upstreams: { nlb_0123456789abcdef: [{ ip: "::1", port: 80, weight: 1, backup: false }] },
    });
    const r = await postRaw(dyn.controlPort, body);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ version: 777 });
    expect(await pushedVersion({ port: dyn.controlPort })).toBe(777);
  });

  it("applies a partial push only on the version it was built against", async () => {
    const target = { port: dyn.controlPort };
    const routes = model(dyn.port);
    const v1 = set({ "127.0.0.2": 1 });
    const v2 = { ...v1, "none-web": { "127.0.0.5": { weight: 1 } } };
    const sets = (b: BackendSet) => pushBody(0, planRoutes(routes, b)).upstreams;
    expect(await pushEndpoints(target, pushBody(5000, planRoutes(routes, v1)))).toBe(5000);
    const partial = partialPushBody(5001, 5000, sets(v1), sets(v2));
    expect(Object.keys(partial?.upstreams ?? {}).length).toBe(1); // only /empty's set changed
    // Against a version nginx does not hold: refused, nothing changes.
    const stale = { ...(partial ?? pushBody(0, [])), base: 4999 };
    await expect(pushEndpoints(target, stale)).rejects.toMatchObject({ status: 409 });
    await expect(pushEndpoints(target, stale)).rejects.toBeInstanceOf(PushError);
    expect((await get(dyn.port, HOST, "/empty/")).status).toBe(503);
    // Against the right version: the listed set changes and the others stay.
    expect(await pushEndpoints(target, partial ?? pushBody(0, []))).toBe(5001);
    expect(await get(dyn.port, HOST, "/empty/")).toMatchObject({ status: 200, body: "127.0.0.5" });
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
    await dyn.push(set({ "127.0.0.2": 1 }));
    expect((await get(dyn.port, HOST, "/empty/")).status).toBe(503);
  });

  it("syncs with a partial push when it can and a whole push when nginx holds another version", async () => {
    const target = { port: dyn.controlPort };
    const sets = (b: BackendSet) => pushBody(0, planRoutes(model(dyn.port), b)).upstreams;
    const first = await syncEndpoints(target, null, sets(set({ "127.0.0.3": 1 })), 6000);
    expect(first.version).toBe(6000);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.3" });
    const second = await syncEndpoints(target, first, sets(set({ "127.0.0.4": 1 })), 6001);
    expect(second.version).toBe(6001);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.4" });
    // The controller believes nginx holds 5999 (say nginx restarted): the partial push is refused, the whole one lands.
    const wrong = { version: 5999, sets: second.sets };
    const third = await syncEndpoints(target, wrong, sets(set({ "127.0.0.2": 1 })), 6002);
    expect(third.version).toBe(6002);
    expect(await pushedVersion(target)).toBe(6002);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.2" });
  });

  it("serialises concurrent pushes: each is stored whole or refused with 409, never mixed", async () => {
    const routes = model(dyn.port);
    const ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    const bodies = ips.map((ip, i) => JSON.stringify(pushBody(7000 + i, planRoutes(routes, set({ [ip]: 1 })))));
    const answers = await Promise.all(bodies.map((b) => postRaw(dyn.controlPort, b)));
    for (const a of answers) expect([200, 409], a.body).toContain(a.status);
    const stored = await pushedVersion({ port: dyn.controlPort });
    const winners = answers.flatMap((a, i) => (a.status === 200 ? [7000 + i] : []));
    expect(winners).toContain(stored);
    const expected = ips[(stored ?? 0) - 7000] ?? "";
    expect(Object.fromEntries(await tally(dyn.port, HOST, 20))).toEqual({ [expected]: 20 });
  });

  it("balances to an IPv6 endpoint", async () => {
    const { backends: v6, port: p6 } = await startBackends(["::1"]);
    const ng = await startNginx({
      mode: "dynamic",
      services: (fp) => services(HOST, fp, [{ prefix: "/", app: "app", service: "web", port: p6 }]),
      backends: {},
    });
    try {
      await ng.push({ "app-web": { "::1": { weight: 1 } } });
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "::1" });
    } finally {
      await ng.stop();
      await Promise.all(v6.map((b) => b.close()));
    }
  });

  it("refuses a push without the rendered token (401) and keeps the sets; the controller's push with it lands", async () => {
    const token = "0123456789abcdef0123456789abcdef";
    const ng = await startNginx({
      mode: "dynamic",
      services: (fp) => services(HOST, fp, [{ prefix: "/", app: "app", service: "web", port }]),
      backends: {},
      pushToken: token,
    });
    try {
      await ng.push({ "app-web": { "127.0.0.2": { weight: 1 } } });
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
      const plans = planRoutes(services(HOST, ng.port, [{ prefix: "/", app: "app", service: "web", port }]), {
        "app-web": { "127.0.0.3": { weight: 1 } },
      });
      for (const wrong of [undefined, "ffffffffffffffffffffffffffffffff"])
        await expect(
          pushEndpoints({ port: ng.controlPort, ...(wrong ? { token: wrong } : {}) }, pushBody(99, plans)),
        ).rejects.toMatchObject({ status: 401 });
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
      expect(await readFile(join(ng.dir, "nginx.conf"), "utf8")).toContain(token);
    } finally {
      await ng.stop();
    }
  });

  it("skips a dead primary without a failed request", async () => {
    const { backends: extra, port: p2 } = await startBackends(["127.0.0.6", "127.0.0.7"]);
    const ng = await startNginx({
      mode: "dynamic",
      services: (fp) => services(HOST, fp, [{ prefix: "/", app: "app", service: "web", port: p2 }]),
      backends: {},
    });
    try {
      await ng.push({ "app-web": { "127.0.0.6": { weight: 1 }, "127.0.0.7": { weight: 1 } } });
      await extra[1]?.close();
      const counts = await tally(ng.port, HOST, 100);
      expect(Object.fromEntries(counts)).toEqual({ "127.0.0.6": 100 });
      // Passive health like max_fails=1 fail_timeout=10s: each of the two workers tries the dead peer once, then
      // skips it, instead of paying a failed connect on every other request.
      const refused = (await ng.errorLog()).split("\n").filter((l) => l.includes("connect() failed")).length;
      expect(refused).toBeGreaterThanOrEqual(1);
      expect(refused).toBeLessThanOrEqual(2);
    } finally {
      await ng.stop();
      await Promise.all(extra.map((b) => b.close()));
    }
  });

  it("hands traffic to the backups when every primary dies, without a failed request", async () => {
    const { backends: extra, port: p2 } = await startBackends(["127.0.0.8", "127.0.0.9", "127.0.0.10"]);
    const ng = await startNginx({
      mode: "dynamic",
      services: (fp) =>
        services(HOST, fp, [
          { prefix: "/", app: "app", service: "web", port: p2, backup: { app: "backup", service: "web", port: p2 } },
        ]),
      backends: {},
    });
    try {
      await ng.push({
        "app-web": { "127.0.0.8": { weight: 1 }, "127.0.0.9": { weight: 1 } },
        "backup-web": { "127.0.0.10": { weight: 1 } },
      });
      const before = await tally(ng.port, HOST, 40);
      expect(before.get("127.0.0.10")).toBeUndefined();
      await extra[0]?.close();
      await extra[1]?.close();
      const after = await tally(ng.port, HOST, 100);
      expect(Object.fromEntries(after)).toEqual({ "127.0.0.10": 100 });
    } finally {
      await ng.stop();
      await Promise.all(extra.map((b) => b.close()));
    }
  });

  it("keeps the pushed sets across a reload: no 503 right after it", async () => {
    await dyn.push(set({ "127.0.0.4": 1 }));
    const before = await dyn.workerPids();
    await dyn.reload();
    const after = await dyn.workerPids();
    expect(after).not.toEqual(before);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.4" });
    expect(Object.fromEntries(await tally(dyn.port, HOST, 50))).toEqual({ "127.0.0.4": 50 });
  });
});
