import { Table } from "../../src/model/table.js";
import { execFile } from "node:child_process";
import { request } from "node:http";
import { connect } from "node:net";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendSet } from "../../src/model/backends.js";
import { ipFamily } from "../../src/model/ip.js";
import { plan, type EndpointSets } from "../../src/model/plan.js";
import { findNginx } from "../../src/nginx/binary.js";
import {
  partialPushBody,
  PushError,
  pushBody,
  pushedVersion,
  pushEndpoints,
  syncEndpoints,
} from "../../src/nginx/endpoints-push.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { encodeSets } from "../../src/nginx/push-format.js";
import { detectLuaSupport } from "../../src/nginx/lua-support.js";
import { bindRoutes, renderNginxConf } from "../../src/render/index.js";
import { type Backend, startAddressBackends as startBackends } from "../helpers/backends.js";
import { hostGet as get, postRaw, tally } from "../helpers/http.js";
import { services } from "../helpers/model.js";
import { serveNginx as startNginx, type ServedNginx as Nginx } from "../helpers/nginx.js";

const HOST = "dyn.test";
/** The upstreams `plan` finds to differ between what nginx holds and what is wanted (the controller's one check). */
const changed = (running: EndpointSets, desired: EndpointSets): readonly string[] | "all" => {
  const p = plan(
    { mode: "dynamic", generation: "g", endpoints: running },
    { mode: "dynamic", generation: "g", endpoints: desired },
  );
  return p.action === "push" ? p.upstreams : [];
};

/** Runs a command as the unprivileged `nobody` (a local attacker); resolves with its exit code and stdout. */
function asNobody(cmd: string, ...args: string[]): Promise<{ code: number; stdout: string }> {
  const argv = ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", cmd, ...args];
  return new Promise((resolve) =>
    execFile("setpriv", argv, { timeout: 10_000 }, (err, stdout) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout }),
    ),
  );
}
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
    const dynamic = renderNginxConf(desired, {
      ...base,
      endpointsMode: "dynamic",
      luaSource: balancerLuaSource(),
      pushToken: "ab".repeat(16),
    });
    expect(dynamic.conf).not.toContain("127.0.0.2");
    expect(dynamic.conf).not.toContain("127.0.0.9");
    expect(dynamic.conf).toContain("balancer_by_lua_block");
    expect(dynamic.files.map((f) => f.path).sort()).toEqual(
      ["balancer", "control", "initial", "outlier", "push", "secret", "sets", "startup_file", "stats", "sweep"].map(
        (m) => `lua/nginx_lb_${m}.lua`,
      ),
    );
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
    const stored = await pushedVersion(dyn.target);
    const body = encodeSets(999, Table.of({}));
    const viaFrontend = await postRaw(dyn.port, body, "/nginx-lb/endpoints", HOST, dyn.target.token);
    expect(viaFrontend.body).toBe("127.0.0.2"); // the route's backend answered, not the push endpoint
    expect(await pushedVersion(dyn.target)).toBe(stored);
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(dyn.controlPort, "127.0.0.2");
      s.on("connect", () => (s.destroy(), resolve(false)));
      s.on("error", () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  it("rejects bad pushes with 4xx and keeps the previous set", async () => {
    await dyn.push(set({ "127.0.0.3": 1 }));
    const stored = await pushedVersion(dyn.target);
    const NAME = "nlb_0123456789abcdef";
    const one = (entry: string, header = "nginx-lb-sets version=12345") =>
      `${header}\n${NAME}=${entry}\nend upstreams=1\n`;
    const ok = `127.0.0.2 ${port} 1 0;`;
    const bad: [string, string | Buffer][] = [
      ["empty body", ""],
      ["not the format", "hello\n"],
      ["the old JSON body", JSON.stringify({ version: 1, upstreams: {} })],
      ["cut off before the end line", `nginx-lb-sets version=1\n${NAME}=${ok}\n`],
      ["no final newline", "nginx-lb-sets version=1\nend upstreams=0"],
      ["data after the end line", "nginx-lb-sets version=1\nend upstreams=0\nx"],
      ["wrong upstream count", one(ok).replace("upstreams=1", "upstreams=2")],
      ["CRLF line ends", one(ok).replaceAll("\n", "\r\n")],
      ["negative version", "nginx-lb-sets version=-1\nend upstreams=0\n"],
      ["version with a leading zero", "nginx-lb-sets version=012\nend upstreams=0\n"],
      ["version over 2^53", "nginx-lb-sets version=9007199254740992\nend upstreams=0\n"],
      ["bad base", "nginx-lb-sets version=1 base=x\nend upstreams=0\n"],
      ["host name", one(`backend.example ${port} 1 0;`)],
      ["ip with port", one(`127.0.0.2:80 ${port} 1 0;`)],
      ["octet over 255", one(`127.0.0.256 ${port} 1 0;`)],
      ["nginx syntax in ip", one(`127.0.0.2;} ${port} 1 0;`)],
      ["bad IPv6", one(`fe80::1::2 ${port} 1 0;`)],
      ["port 0", one("127.0.0.2 0 1 0;")],
      ["port 70000", one("127.0.0.2 70000 1 0;")],
      ["port with a leading zero", one("127.0.0.2 080 1 0;")],
      ["fractional weight", one(`127.0.0.2 ${port} 1.5 0;`)],
      ["weight over the maximum", one(`127.0.0.2 ${port} 1001 0;`)],
      ["backup not 0/1", one(`127.0.0.2 ${port} 1 yes;`)],
      ["a field too many", one(`127.0.0.2 ${port} 1 0 0;`)],
      ["double space", one(`127.0.0.2  ${port} 1 0;`)],
      ["octet with a leading zero", one(`127.0.0.02 ${port} 1 0;`)],
      ["four-digit octet", one(`127.0.0.1000 ${port} 1 0;`)],
      ["empty octet", one(`127..0.2 ${port} 1 0;`)],
      ["three octets", one(`127.0.2 ${port} 1 0;`)],
      ["empty weight", one(`127.0.0.2 ${port}  0;`)],
      ["backup cut off", one(`127.0.0.2 ${port} 1 ;`)],
      ["port 65536", one("127.0.0.2 65536 1 0;")],
      ["weight with a leading zero", one(`127.0.0.2 ${port} 01 0;`)],
      ["backup 2", one(`127.0.0.2 ${port} 1 2;`)],
      ["a good endpoint, then a bad one", one(`${ok}127.0.0.2 ${port} 1001 0;`)],
      ["an IPv6 endpoint, then a bad one", one(`::1 ${port} 1 0;127.0.0.2 ${port} 1 0 ;`)],
      ["endpoint without its ';'", one(`127.0.0.2 ${port} 1 0`)],
      ["empty endpoint", one(`;${ok}`)],
      ["bad upstream name", `nginx-lb-sets version=1\nevil\u0001name"=${ok}\nend upstreams=1\n`],
      ["upstream listed twice", `nginx-lb-sets version=1\n${NAME}=\n${NAME}=${ok}\nend upstreams=2\n`],
      ["line without '='", `nginx-lb-sets version=1\n${NAME}\nend upstreams=1\n`],
      ["oversize body", Buffer.alloc(17 * 1024 * 1024, 0x20)],
    ];
    for (const [what, body] of bad) {
      const r = await postRaw(dyn.controlPort, body, undefined, undefined, dyn.target.token);
      expect(r.status, `${what}: ${r.body}`).toBeGreaterThanOrEqual(400);
      expect(r.status, what).toBeLessThan(500);
      if (what !== "oversize body") expect(typeof JSON.parse(r.body).error, `${what}: ${r.body}`).toBe("string");
    }
    expect(await pushedVersion(dyn.target)).toBe(stored);
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
        "1.2.3.4::",
        "::1.2.3.4",
        "1::1.2.3.4",
      ];
      let version = 1;
      for (const ip of addresses) {
        const body = encodeSets(
          ++version,
          Table.of({ nlb_0123456789abcdef: [{ ip, port: 80, weight: 1, backup: false }] }),
        );
        const r = await postRaw(ng.controlPort, body, undefined, undefined, ng.target.token);
        expect(r.status === 200, `${JSON.stringify(ip)}: nginx answered ${r.status} ${r.body}`).toBe(
          ipFamily(ip) !== null,
        );
      }
      // Every field at its bounds, IPv4 and IPv6 mixed in one set.
      const bounds = `nginx-lb-sets version=${++version}\nnlb_0123456789abcdef=0.0.0.0 1 0 1;::1 65535 1000 0;255.255.255.255 65535 1000 0;\nend upstreams=1\n`;
      const r = await postRaw(ng.controlPort, bounds, undefined, undefined, ng.target.token);
      expect(r.status, r.body).toBe(200);
    } finally {
      await ng.stop();
    }
  });

  it("accepts IPv6 literals and answers with the version it stored", async () => {
    const body = encodeSets(
      777,
      Table.of({ nlb_0123456789abcdef: [{ ip: "::1", port: 80, weight: 1, backup: false }] }),
    );
    const r = await postRaw(dyn.controlPort, body, undefined, undefined, dyn.target.token);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ version: 777 });
    expect(await pushedVersion(dyn.target)).toBe(777);
  });

  it("applies a partial push only on the version it was built against", async () => {
    const target = dyn.target;
    const routes = model(dyn.port);
    const v1 = set({ "127.0.0.2": 1 });
    const v2 = { ...v1, "none-web": { "127.0.0.5": { weight: 1 } } };
    const sets = (b: BackendSet) => pushBody(0, bindRoutes(routes, b)).upstreams;
    expect(await pushEndpoints(target, pushBody(5000, bindRoutes(routes, v1)))).toBe(5000);
    const diff = changed(sets(v1), sets(v2));
    const partial = diff === "all" ? null : partialPushBody(5001, 5000, sets(v2), diff);
    expect(partial?.upstreams.size).toBe(1); // only /empty's set changed
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
    const target = dyn.target;
    const sets = (b: BackendSet) => pushBody(0, bindRoutes(model(dyn.port), b)).upstreams;
    const first = await syncEndpoints(target, null, sets(set({ "127.0.0.3": 1 })), "all", 6000);
    expect(first.version).toBe(6000);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.3" });
    const next = sets(set({ "127.0.0.4": 1 }));
    const second = await syncEndpoints(target, first, next, changed(first.sets, next), 6001);
    expect(second.version).toBe(6001);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.4" });
    // The controller believes nginx holds 5999 (say nginx restarted): the partial push is refused, the whole one lands.
    const wrong = { version: 5999, sets: second.sets };
    const last = sets(set({ "127.0.0.2": 1 }));
    const third = await syncEndpoints(target, wrong, last, changed(wrong.sets, last), 6002);
    expect(third.version).toBe(6002);
    expect(await pushedVersion(target)).toBe(6002);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ body: "127.0.0.2" });
  });

  it("serialises concurrent pushes: each is stored whole or refused with 409, never mixed", async () => {
    const routes = model(dyn.port);
    const ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    const bodies = ips.map((ip, i) =>
      encodeSets(7000 + i, pushBody(0, bindRoutes(routes, set({ [ip]: 1 }))).upstreams),
    );
    const answers = await Promise.all(
      bodies.map((b) => postRaw(dyn.controlPort, b, undefined, undefined, dyn.target.token)),
    );
    for (const a of answers) expect([200, 409], a.body).toContain(a.status);
    const stored = await pushedVersion(dyn.target);
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

  it("refuses every request without the rendered token (401), reads included, and keeps the sets", async () => {
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
      const plans = bindRoutes(services(HOST, ng.port, [{ prefix: "/", app: "app", service: "web", port }]), {
        "app-web": { "127.0.0.3": { weight: 1 } },
      });
      const body = pushBody(99, plans);
      // No header, a wrong token of the same length (differing only in its last byte), a prefix, a longer one.
      for (const wrong of [
        undefined,
        `${token.slice(0, -1)}e`,
        token.slice(0, 16),
        `${token}0`,
        "",
        token.toUpperCase(),
      ]) {
        const target = { port: ng.controlPort, ...(wrong !== undefined ? { token: wrong } : {}) };
        await expect(pushEndpoints(target, body), String(wrong)).rejects.toMatchObject({ status: 401 });
        await expect(pushedVersion(target), String(wrong)).rejects.toMatchObject({ status: 401 });
      }
      // Two token headers: refused whatever they hold.
      const twice = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: "127.0.0.1",
            port: ng.controlPort,
            path: "/nginx-lb/endpoints",
            agent: false,
            headers: ["host", "127.0.0.1", "x-nginx-lb-token", token, "x-nginx-lb-token", token],
          },
          (res) => (res.resume(), resolve(res.statusCode ?? 0)),
        );
        req.on("error", reject);
        req.end();
      });
      expect(twice).toBe(401);
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
      expect(await pushEndpoints({ port: ng.controlPort, token }, body)).toBe(99);
      expect(await pushedVersion({ port: ng.controlPort, token })).toBe(99);
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.3" });
      expect(await readFile(join(ng.dir, "nginx.conf"), "utf8")).toContain(token);
    } finally {
      await ng.stop();
    }
  });

  it("gives a local unprivileged user (nobody) neither the token nor a push", async () => {
    const ng = await startNginx({
      mode: "dynamic",
      services: (fp) => services(HOST, fp, [{ prefix: "/", app: "app", service: "web", port }]),
      backends: {},
    });
    try {
      await ng.push({ "app-web": { "127.0.0.2": { weight: 1 } } });
      const stored = await pushedVersion(ng.target);
      const url = `http://127.0.0.1:${ng.controlPort}/nginx-lb/endpoints`;
      const curl = (...args: string[]) => asNobody("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", ...args, url);
      const routes = services(HOST, ng.port, [{ prefix: "/", app: "app", service: "web", port }]);
      const evil = encodeSets(stored ?? 0, pushBody(0, bindRoutes(routes, {})).upstreams); // would empty the route
      expect((await curl("--data-binary", evil)).stdout).toBe("401");
      expect((await curl("--data-binary", evil, "-H", `x-nginx-lb-token: ${"0".repeat(32)}`)).stdout).toBe("401");
      expect((await curl()).stdout).toBe("401");
      // The token lives in nginx.conf inside the 0700 prefix: nobody cannot read it.
      const cat = await asNobody("cat", join(ng.dir, "nginx.conf"));
      expect(cat.code).not.toBe(0);
      expect(cat.stdout).toBe("");
      expect(await pushedVersion(ng.target)).toBe(stored);
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
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
    // No push after this reload: the new workers serve what the shared dict kept.
    await dyn.reloadWithoutPush();
    const after = await dyn.workerPids();
    expect(after).not.toEqual(before);
    expect(await get(dyn.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.4" });
    expect(Object.fromEntries(await tally(dyn.port, HOST, 50))).toEqual({ "127.0.0.4": 50 });
  });
});
