import { Table } from "../../src/model/table.js";
import type { PushedEndpoint } from "../../src/model/plan.js";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendSet } from "../../src/model/backends.js";
import { plan } from "../../src/model/plan.js";
import { pushedCertsVersion } from "../../src/nginx/certs-push.js";
import { pushedVersion } from "../../src/nginx/endpoints-push.js";
import { encodeRoutes, pushedRoutesVersion } from "../../src/nginx/routes-push.js";
import { INITIAL_SETS_FILE } from "../../src/render/dynamic.js";
import { INITIAL_CERTS_FILE } from "../../src/render/tls-dynamic.js";
import { INITIAL_ROUTES_FILE } from "../../src/render/routes-dynamic.js";
import { ROUTES_PATH } from "../../src/render/routes-dynamic.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get, postRaw } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePorts, serveNginx, type ServedNginx } from "../helpers/nginx.js";
import { waitFor } from "../helpers/wait.js";

/**
 * Dynamic routes through a real nginx: every routing change but a new port is a push (no reload, the same worker
 * processes), bad pushes are refused with the previous table serving, and a new master serves the last table at once.
 */

let pool: BackendPool;
let ngx: ServedNginx;
let port = 0;
let spare = 0;

const backends: BackendSet = mustDesired(
  { servers: [] },
  {
    "a-web": { "127.0.0.2": { weight: 1 } },
    "b-web": { "127.0.0.3": { weight: 1 } },
    "c-web": { "127.0.0.4": { weight: 1 } },
  },
).backends;

/** services.json's servers on the test's port (and more given as they are). */
const model = (sites: Record<string, Record<string, unknown>>, extra: unknown[] = []) =>
  mustDesired({
    servers: [
      ...Object.entries(sites).map(([domain, routes]) => ({ domain_name: domain, frontend_port: port, routes })),
      ...extra,
    ],
  }).services;
const to = (app: string, more: Record<string, unknown> = {}) => ({ app, service: "web", port: pool.port, ...more });

async function echo(host: string, path: string, p = port): Promise<{ status: number; echo?: Echo; body: string }> {
  const r = await get(`http://127.0.0.1:${p}${path}`, { host });
  return { status: r.status, body: r.body, ...(r.status === 200 ? { echo: r.json<Echo>() } : {}) };
}

/** The master and its workers: unchanged by a push, replaced (workers) by a reload. */
async function processes(): Promise<string> {
  return `${ngx.masterPid} ${(await ngx.workerPids()).join(",")}`;
}

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
  [port = 0, spare = 0] = await freePorts(2);
  ngx = await serveNginx({
    services: model({ "a.test": { "/": to("a") } }),
    backends,
    mode: "dynamic",
    routesMode: "dynamic",
  });
});

afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

describe("routing changes are pushes: no reload, the same workers", () => {
  it("route add, backend_path change, backup change, route remove, domain add and removal", async () => {
    const before = await processes();
    expect(before).toMatch(/^\d+ \d+(,\d+)*$/);
    const steps: [string, ReturnType<typeof model>, () => Promise<void>][] = [
      [
        "route added",
        model({ "a.test": { "/": to("a"), "/b": to("b") } }),
        async () => expect((await echo("a.test", "/b/x")).echo).toMatchObject({ backend: "127.0.0.3", url: "/x" }),
      ],
      [
        "backend_path changed",
        model({ "a.test": { "/": to("a"), "/b": to("b", { backend_path: "/v9" }) } }),
        async () =>
          expect((await echo("a.test", "/b/x?q=1")).echo).toMatchObject({ backend: "127.0.0.3", url: "/v9/x?q=1" }),
      ],
      [
        "backup changed (primary without endpoints)",
        model({
          "a.test": {
            "/": to("a"),
            "/b": to("none", { backend_path: "/v9", backup: { app: "c", service: "web", port: pool.port } }),
          },
        }),
        async () => expect((await echo("a.test", "/b/x")).echo).toMatchObject({ backend: "127.0.0.4", url: "/v9/x" }),
      ],
      [
        "domain added",
        model({ "a.test": { "/": to("a", { backend_path: "/v2" }) }, "*.c.test": { "/": to("c") } }),
        async () => {
          expect((await echo("x.c.test", "/")).echo?.backend).toBe("127.0.0.4");
          // The /b route is gone in this step; "/" now maps to /v2.
          expect((await echo("a.test", "/b/x")).echo).toMatchObject({ backend: "127.0.0.2", url: "/v2/b/x" });
        },
      ],
      [
        "domain removed",
        model({ "*.c.test": { "/": to("c") } }),
        async () => {
          const gone = await echo("a.test", "/");
          expect(gone).toMatchObject({ status: 404, body: "no site is configured for this host name\n" });
          expect((await echo("x.c.test", "/")).echo?.backend).toBe("127.0.0.4");
        },
      ],
    ];
    for (const [what, services, check] of steps) {
      const out = await ngx.apply({ services });
      expect(out.action, what).toBe("push");
      await check();
      expect(await processes(), what).toBe(before);
    }
    const conf = await readFile(join(ngx.dir, "nginx.conf"), "utf8");
    expect(conf).not.toMatch(/a\.test|c\.test/);
  });

  it("a new listening port reloads, once, and the other port keeps serving", async () => {
    const services = model({ "*.c.test": { "/": to("c") } }, [
      { domain_name: "new.test", frontend_port: spare, routes: { "/": to("b") } },
    ]);
    const before = await ngx.workerPids();
    expect((await ngx.apply({ services })).action).toBe("reload");
    expect((await echo("new.test", "/", spare)).echo?.backend).toBe("127.0.0.3");
    expect((await echo("x.c.test", "/")).echo?.backend).toBe("127.0.0.4");
    // The old workers finish gracefully: on a busy machine one may still be exiting when the new ones already answer.
    const after = await waitFor(
      "the old workers to exit",
      async () => {
        const now = await ngx.workerPids();
        return !now.some((p) => before.includes(p)) && now;
      },
      10_000,
    );
    // A route added on the new port afterwards is a push again.
    const more = model({ "*.c.test": { "/": to("c") } }, [
      { domain_name: "new.test", frontend_port: spare, routes: { "/": to("b"), "/a": to("a") } },
    ]);
    expect((await ngx.apply({ services: more })).action).toBe("push");
    expect((await echo("new.test", "/a/z", spare)).echo).toMatchObject({ backend: "127.0.0.2", url: "/z" });
    expect(await ngx.workerPids()).toEqual(after);
  });
});

describe("bad pushes are refused and the previous table keeps serving", () => {
  const serving = async () => expect((await echo("x.c.test", "/")).echo?.backend).toBe("127.0.0.4");

  it("refuses a wrong or missing token, malformed tables, a cut-off text and a stale partial push", async () => {
    const version = await pushedRoutesVersion(ngx.target);
    expect(version).not.toBeNull();
    const post = (body: string, token = ngx.target.token) =>
      postRaw(ngx.controlPort, body, ROUTES_PATH, "127.0.0.1", token);
    const good = encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ nlb_0123456789abcdef / a-web;" }));
    expect((await post(good, "0".repeat(32))).status).toBe(401);
    expect((await postRaw(ngx.controlPort, good, ROUTES_PATH)).status).toBe(401);
    const bad: [string, RegExp][] = [
      ["", /empty body/],
      ["nginx-lb-routes version=1\n", /missing the final/],
      ["nginx-lb-routes version=x\nend servers=0\n", /line 1/],
      [good.replace("end servers=1", "end servers=2"), /end servers=1/],
      [good.replace("\nend servers=1\n", "\n"), /missing the final/],
      [good + "more\n", /data after/],
      [encodeRoutes(1, Table.of({ [`${port} EVIL.test`]: "" })), /lower-case domain/],
      ...[
        "-evil.test",
        "evil-.test",
        "evil..test",
        ".evil.test",
        "evil.test.",
        "evil.-",
        `${"a".repeat(64)}.test`,
        "*.*.test",
        "ev_il.test",
        "*.",
      ].map((domain): [string, RegExp] => [
        encodeRoutes(1, Table.of({ [`${port} ${domain}`]: "" })),
        /lower-case domain/,
      ]),
      [encodeRoutes(1, Table.of({ [`0 evil.test`]: "" })), /port/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ nlb_0123456789abcdef /x/. a-web;" })), /backend_path/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ nlb_0123456789abcdef / a-web" })), /end in ';'/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x/ nlb_0123456789abcdef / a-web;" })), /trailing/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/../x nlb_0123456789abcdef / a-web;" })), /prefix/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ nlb_0123456789abcdef /a%20b a-web;" })), /backend_path/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ evil / a-web;" })), /upstream/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: '/ nlb_0123456789abcdef / a"web;' })), /backend/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/ nlb_0 / a-web;/ nlb_1 / a-web;" })), /twice/],
      // Near misses of the plainest route shape, which the Lua reads on a fast path.
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x//y nlb_0123456789abcdef / a-web;" })), /prefix/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x nlb_0123456789abcdef_ / a-web;" })), /upstream/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: `/x nlb_${"0".repeat(61)} / a-web;` })), /upstream/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x nlb_0123456789abcdef /y a/web;" })), /backend/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x nlb_0123456789abcdef /y a-web;;" })), /route 2/],
      [encodeRoutes(1, Table.of({ [`${port} evil.test`]: "/x  nlb_0123456789abcdef /y a-web;" })), /route 1: must be/],
      [
        encodeRoutes(1, Table.of({ [`${port} evil.test`]: `/x nlb_0123456789abcdef /${"y".repeat(1024)} a-web;` })),
        /backend_path/,
      ],
      [`nginx-lb-routes version=2\n${port} evil.test\nend servers=1\n`, /only allowed in a partial push/],
    ];
    for (const [body, why] of bad) {
      const r = await post(body);
      expect(r.status, body).toBe(400);
      expect(r.body, body).toMatch(why);
    }
    // The endpoint sets take a removal line only in a partial push too.
    const setsRemoval = "nginx-lb-sets version=5\nnlb_0123456789abcdef\nend upstreams=1\n";
    const refused = await postRaw(ngx.controlPort, setsRemoval, "/nginx-lb/endpoints", "127.0.0.1", ngx.target.token);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatch(/only allowed in a partial push/);
    const stale = encodeRoutes(9, Table.of({}), { base: (version ?? 0) + 1000, changed: [`${port} x.c.test`] });
    expect((await post(stale)).status).toBe(409);
    const huge = `nginx-lb-routes version=3\n${"x".repeat(17 * 1024 * 1024)}`;
    expect((await post(huge)).status).toBe(413);
    expect(await pushedRoutesVersion(ngx.target)).toBe(version);
    await serving();
    expect((await echo("evil.test", "/")).status).toBe(404);
  });
});

describe("a new nginx master", () => {
  it("finds a whole start-up table: the one before a change until the change is written, then the new one", async () => {
    const file = join(ngx.dir, "routes.table");
    const whole = (text: string) => {
      const lines = text.split("\n");
      expect(lines[0]).toMatch(/^nginx-lb-routes version=\d+$/);
      expect(lines.at(-2)).toBe(`end servers=${lines.length - 3}`);
      expect(lines.at(-1)).toBe("");
      return text;
    };
    await ngx.settled();
    const before = whole(await readFile(file, "utf8"));
    await ngx.apply({ services: model({ "*.c.test": { "/": to("c") }, "late.test": { "/": to("a") } }) });
    // A master that starts now (nginx killed right after the push) loads this file: the table before the change (the
    // write waits up to a second on a quiet machine), or the new one, never a mix.
    const now = whole(await readFile(file, "utf8"));
    expect(now === before || now.includes(" late.test=")).toBe(true);
    await ngx.settled();
    expect(whole(await readFile(file, "utf8"))).toContain(" late.test=");
  });

  it("serves the last pushed table from the state dir at once, before any push", async () => {
    await ngx.settled();
    const { dir, desired } = ngx;
    await ngx.stop();
    const fresh = await serveNginx({ ...desired, dir, mode: "dynamic", routesMode: "dynamic", push: false });
    expect(await pushedRoutesVersion(fresh.target)).not.toBeNull();
    const r = await get(`http://127.0.0.1:${port}/`, { host: "x.c.test" });
    expect(r.status).toBe(200);
    expect(r.json<Echo>().backend).toBe("127.0.0.4");
    ngx = fresh;
  });
});

/** When a process started (ms since the epoch, to the kernel's 10 ms clock tick), from /proc. */
/**
 * When process `pid` started, in epoch ms: its start in clock ticks since boot against /proc/uptime read at the same
 * moment (both since boot, 10 ms steps; /proc/stat's btime has whole seconds only and drifts on a VM).
 */
async function startedAt(pid: number): Promise<number> {
  const [stat, uptime] = await Promise.all([readFile(`/proc/${pid}/stat`, "utf8"), readFile("/proc/uptime", "utf8")]);
  const now = Date.now();
  const ticks = Number(stat.split(") ")[1]?.split(" ")[19]);
  return now - (Number(uptime.split(" ")[0]) * 1000 - ticks * 10);
}

/** The version in a start-up file's first line ("nginx-lb-<kind> version=<v>"). */
async function fileVersion(dir: string, file: string): Promise<number> {
  return Number(/version=(\d+)/.exec(await readFile(join(dir, file), "utf8"))?.[1]);
}

describe("a cold start", () => {
  it("hands the new master the target as start-up files before it starts: it holds their versions, no push follows", async () => {
    const { desired } = ngx;
    await ngx.stop();
    // A new state dir: nothing was ever pushed or written there.
    const fresh = await serveNginx({ ...desired, mode: "dynamic", routesMode: "dynamic" });
    ngx = fresh;
    const files = [INITIAL_SETS_FILE, INITIAL_ROUTES_FILE, INITIAL_CERTS_FILE];
    const versions = await Promise.all(files.map((f) => fileVersion(fresh.dir, f)));
    const held = [
      await pushedVersion(fresh.target),
      await pushedRoutesVersion(fresh.target),
      await pushedCertsVersion(fresh.target),
    ];
    expect(held).toEqual(versions);
    // Written before the master started (a push after the start would have written them after it, under the version
    // it pushed), and not rewritten since.
    const master = await startedAt(fresh.masterPid);
    const mtimes = await Promise.all(files.map(async (f) => (await stat(join(fresh.dir, f))).mtimeMs));
    await fresh.settled();
    for (const [i, f] of files.entries()) {
      expect(mtimes[i], f).toBeLessThan(master + 30);
      expect((await stat(join(fresh.dir, f))).mtimeMs, f).toBe(mtimes[i]);
      expect(await fileVersion(fresh.dir, f)).toBe(versions[i]);
    }
    const r = await get(`http://127.0.0.1:${port}/`, { host: "x.c.test" });
    expect(r.status).toBe(200);
    expect(r.json<Echo>().backend).toBe("127.0.0.4");
  });
});

describe("a route that comes and goes under load", () => {
  it("never answers 503 in between: sets of a new route go first, sets of a removed route last", async () => {
    const flip = (withT: boolean) =>
      model({ "flip.test": { "/": to("a"), ...(withT ? { "/t": to("b") } : {}) }, "*.c.test": { "/": to("c") } });
    await ngx.apply({ services: flip(false) });
    const answers = new Map<string, number>();
    let done = false;
    const loop = (async () => {
      for (let i = 0; i < 5000 && !done; i++) {
        const r = await echo("flip.test", "/t/x");
        const key = r.status === 200 ? (r.echo?.backend ?? "?") : `${r.status} ${r.body}`;
        answers.set(key, (answers.get(key) ?? 0) + 1);
      }
    })();
    for (let i = 0; i < 40; i++) {
      expect((await ngx.apply({ services: flip(i % 2 === 0) })).action).toBe("push");
      await new Promise((r) => setTimeout(r, 5));
    }
    done = true;
    await loop;
    expect([...answers.keys()].sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
  });
});

describe("plan", () => {
  const state = (routes: Record<string, string> | null) =>
    ({
      mode: "dynamic",
      generation: "g",
      endpoints: Table.empty<readonly PushedEndpoint[]>(),
      routes: routes && Table.of(routes),
    }) as const;
  it("pushes only the servers whose routes differ; a generation change reloads", () => {
    expect(plan(state({ a: "1", b: "2" }), state({ a: "1", b: "2" }))).toEqual({ action: "none" });
    expect(plan(state({ a: "1", b: "2" }), state({ a: "1", c: "3" }))).toEqual({
      action: "push",
      upstreams: [],
      routes: ["c", "b"],
    });
    expect(plan(state(null), state({ a: "1" }))).toEqual({ action: "push", upstreams: [], routes: "all" });
    // Upstreams come and go with routes, without a reload: named in a partial push (a removed one: forgotten).
    const sets = (names: string[]) => Table.from(names.map((n) => [n, []]));
    expect(
      plan(
        { ...state({ a: "1" }), endpoints: sets(["u1", "u2"]) },
        { ...state({ a: "2" }), endpoints: sets(["u1", "u3"]) },
      ),
    ).toEqual({ action: "push", upstreams: ["u3", "u2"], routes: ["a"] });
    expect(plan(state({ a: "1" }), { ...state({ a: "1" }), generation: "h" })).toEqual({ action: "reload" });
  });
});
