/**
 * `/api/services` end to end: a real `nginx-lb run --services-etcd-prefix` with an admin token over a real etcd,
 * real nginx and real backends, asked through its admin server as an operator's script would. Writes go through the
 * same guarded path as `nginx-lb services`; what they write is served through nginx. A controller without a token
 * has no write API; one reading a routes file says to edit the file.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { STORED_KEY } from "../../src/model/stored-key.js";
import { parseServices } from "../../src/model/services.js";
import { nodeTlsInspector } from "../../src/tls/inspect.js";
import { sample, startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { launchBrowser } from "../helpers/browser.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { get, type Reply } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { startRoutesLb, type RoutesLb } from "../helpers/routes-lb.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

const ROUTES = "/api-e2e/services";
const REGISTRY = "/api-e2e/backends";
const TOKEN = "admin-token-for-the-services-api";

let pool: BackendPool;
let etcd: EtcdServer;
let dir: string;
let port: number;
let sslPort: number;
let pem: Pem;
beforeAll(async () => {
  [pool, etcd, dir, port, sslPort] = await Promise.all([
    startBackends(["127.0.0.2", "127.0.0.3"]),
    startEtcd(),
    tempDir("nginx-lb-services-api-"),
    freePort(),
    freePort(),
  ]);
  pem = await makeLeaf(await makeCa(dir), dir, { names: ["t.test"] });
  await etcd.ctl(["put", `${REGISTRY}/a-web/ips/127.0.0.2`, '{"weight":1}']);
  await etcd.ctl(["put", `${REGISTRY}/b-web/ips/127.0.0.3`, '{"weight":1}']);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

type Lb = RoutesLb;
/** A controller on its own loopback address, routes from etcd; with the admin token unless `token` is null. */
const controller = (host: string, token: string | null) =>
  startRoutesLb({
    dir,
    host,
    etcd: etcd.endpoint,
    registry: REGISTRY,
    routes: ROUTES,
    ...(token ? { env: { NGINX_LB_ADMIN_TOKEN: token } } : {}),
  });

/** A request to the admin server; `token` goes in an Authorization header (none when null). */
function api(
  c: Lb,
  method: string,
  path: string,
  o: { body?: unknown; token?: string | null; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const token = o.token === undefined ? TOKEN : o.token;
  return get(`http://127.0.0.1:${c.admin}${path}`, {
    method,
    headers: {
      ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
      ...(o.body !== undefined ? { "content-type": "application/json" } : {}),
      ...o.headers,
    },
    ...(o.body !== undefined ? { body: typeof o.body === "string" ? o.body : JSON.stringify(o.body) } : {}),
    timeoutMs: 20_000,
  });
}

/** Which backend answers `domain` through this controller's nginx, or the status. */
async function who(c: Lb, domain: string): Promise<string> {
  const r = await get(`http://${c.host}:${port}/`, { host: domain, timeoutMs: 3000 }).catch(() => null);
  return r?.status === 200 ? r.json<Echo>().backend : `status ${r?.status ?? "none"}`;
}

const plain = (domain: string, app: string) => ({
  domain_name: domain,
  frontend_port: port,
  routes: { "/": { app, service: "web", port: pool.port } },
});
const withTls = () => ({
  domain_name: "t.test",
  frontend_port: port,
  ssl_port: sslPort,
  ssl_certificate: pem.cert,
  ssl_certificate_key: pem.key,
  routes: { "/": { app: "a", service: "web", port: pool.port } },
});
const doc = (...servers: unknown[]) => ({ version: "0.1", servers });
const keys = async () =>
  (await etcd.ctl(["get", "--prefix", "--keys-only", `${ROUTES}/`])).stdout.split("\n").filter(Boolean);

interface Written {
  dryRun: boolean;
  written: boolean;
  revision: number;
  message: string;
  diff: { lines: string[]; unchanged: number; added: { server: string }[] };
}

let main: Lb;

describe("/api/services with the admin token", () => {
  test("PUT writes the table and nginx serves it; GET round-trips without key material and validates", async () => {
    main = await controller("127.0.0.20", TOKEN);
    const put = await api(main, "PUT", "/api/services", { body: doc(plain("a.test", "a"), withTls()) });
    expect(put.status, put.body).toBe(200);
    const w = put.json<Written>();
    expect(w).toMatchObject({ dryRun: false, written: true });
    expect(w.diff.lines).toEqual([`+ a.test:${port} (routes /)`, `+ t.test:${port} +tls:${sslPort} (routes /)`]);
    expect(put.body).not.toMatch(/PRIVATE KEY/);
    expect(await keys()).toEqual([`${ROUTES}/a.test:${port}`, `${ROUTES}/t.test:${port}`]);
    await eventually(async () => (await who(main, "a.test")) === "127.0.0.2", 20_000, "a.test served");

    const got = await api(main, "GET", "/api/services");
    expect(got.status, got.body).toBe(200);
    expect(got.headers.etag).toBe(`"${await etcd.revision()}"`);
    expect(got.body).not.toMatch(/PRIVATE KEY/);
    const table = got.json<{ version: string; servers: Record<string, unknown>[] }>();
    expect(table).toEqual(doc(plain("a.test", "a"), { ...withTls(), ssl_certificate_key: STORED_KEY }));
    // With the key put back it is the file pushed, and it validates as services.json (TLS checks included).
    const back = {
      ...table,
      servers: table.servers.map((s) => (s["ssl_certificate_key"] ? { ...s, ssl_certificate_key: pem.key } : s)),
    };
    expect(back).toEqual(doc(plain("a.test", "a"), withTls()));
    expect(parseServices(back, { inspectTls: nodeTlsInspector }).ok).toBe(true);
    // As it is (the placeholder keeps the stored key), it writes back as no change.
    const rev = await etcd.revision();
    const again = await api(main, "PUT", "/api/services", { body: got.body });
    expect(again.status, again.body).toBe(200);
    expect(again.json<Written>()).toMatchObject({ written: false, diff: { lines: [], unchanged: 2 } });
    expect(await etcd.revision()).toBe(rev);
  });

  test("dry_run changes nothing and answers the diff the CLI prints", async () => {
    const rev = await etcd.revision();
    const r = await api(main, "PUT", "/api/services?dry_run=1", { body: doc(plain("a.test", "b")) });
    expect(r.status, r.body).toBe(200);
    const w = r.json<Written>();
    expect(w).toMatchObject({ dryRun: true, written: false, revision: rev });
    expect(w.diff.lines).toEqual([
      `- t.test:${port}`,
      `~ a.test:${port}: route / changed: a-web:${pool.port} -> b-web:${pool.port}`,
    ]);
    expect(await etcd.revision()).toBe(rev);
    expect(await who(main, "a.test")).toBe("127.0.0.2");
  });

  test("an invalid table: 422 with every problem's JSON path, nothing written", async () => {
    const rev = await etcd.revision();
    const bad = doc(
      { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "a", service: "web", port: 0 } } },
      { domain_name: "x.test", frontend_port: port, routes: { "/": { app: "x" } } },
    );
    const r = await api(main, "PUT", "/api/services", { body: bad });
    expect(r.status, r.body).toBe(422);
    const paths = r.json<{ problems: { path: string }[] }>().problems.map((p) => p.path);
    expect(paths).toEqual(expect.arrayContaining(['servers[0].routes["/"].port', 'servers[1].routes["/"].service']));
    const notJson = await api(main, "PUT", "/api/services", { body: '{"servers": [' });
    expect([notJson.status, notJson.json<{ problems: { path: string }[] }>().problems[0]?.path]).toEqual([
      422,
      "(file)",
    ]);
    // A placeholder where etcd holds no key for that server.
    const orphan = await api(main, "PUT", "/api/services", {
      body: doc({ ...withTls(), domain_name: "u.test", ssl_certificate_key: STORED_KEY }),
    });
    expect([orphan.status, orphan.json<{ problems: { path: string }[] }>().problems[0]?.path]).toEqual([
      422,
      "servers[0].ssl_certificate_key",
    ]);
    expect(await etcd.revision()).toBe(rev);
  });

  test("writes without the token, or with a wrong one (or only a cookie), are refused with 403", async () => {
    const rev = await etcd.revision();
    const body = doc(plain("a.test", "b"));
    for (const r of [
      await api(main, "PUT", "/api/services", { body, token: null }),
      await api(main, "PUT", "/api/services", { body, token: "not-the-admin-token-at-all" }),
      await api(main, "PUT", "/api/services", {
        body,
        token: null,
        headers: { cookie: `nlb_admin_token=${TOKEN}` },
      }),
      await api(main, "DELETE", `/api/services/a.test:${port}`, { token: null }),
    ])
      expect([r.status, r.body]).toEqual([403, expect.stringMatching(/Authorization: Bearer/)]);
    // Reads need it too (a configured token guards every path but the probes), answered as elsewhere.
    expect((await api(main, "GET", "/api/services", { token: null })).status).toBe(401);
    expect(await etcd.revision()).toBe(rev);
    expect(await who(main, "a.test")).toBe("127.0.0.2");
  });

  test("with the token: applied, and the new route is served through nginx", async () => {
    const r = await api(main, "PUT", "/api/services", { body: doc(plain("a.test", "b"), withTls()) });
    expect(r.status, r.body).toBe(200);
    expect(r.json<Written>()).toMatchObject({ written: true, revision: await etcd.revision() });
    await eventually(async () => (await who(main, "a.test")) === "127.0.0.3", 20_000, "a.test now on b-web");
  });

  test("a write with a stale If-Match revision is refused with 409, whether a key changed or was deleted since", async () => {
    const read = await api(main, "GET", "/api/services");
    const etag = read.headers.etag ?? "";
    // Another writer changes a server after that read.
    const other = await api(main, "PUT", `/api/services/a.test:${port}`, { body: plain("a.test", "a") });
    expect(other.status, other.body).toBe(200);
    const rev = await etcd.revision();
    const stale = await api(main, "PUT", "/api/services", {
      body: read.body,
      headers: { "if-match": etag },
    });
    expect(stale.status, stale.body).toBe(409);
    expect(stale.json<{ error: string }>().error).toMatch(
      new RegExp(
        `conflict: the table under ${ROUTES} changed after revision ${etag.replace(/"/g, "")} .*nothing was written`,
      ),
    );
    expect(await etcd.revision()).toBe(rev);

    // A server deleted after the read is a change too.
    const read2 = await api(main, "GET", "/api/services");
    await etcd.ctl(["put", "/api-e2e/elsewhere", "x"]);
    const unrelated = await api(main, "PUT", "/api/services", {
      body: read2.body,
      headers: { "if-match": read2.headers.etag ?? "" },
    });
    // A write elsewhere in etcd is not a change of the table.
    expect(unrelated.status, unrelated.body).toBe(200);
    const deleted = await api(main, "DELETE", `/api/services/t.test:${port}?dry_run=1`);
    expect([deleted.status, deleted.json<Written>().diff.lines]).toEqual([200, [`- t.test:${port}`]]);
    expect((await api(main, "DELETE", `/api/services/t.test:${port}`)).status).toBe(200);
    const afterDelete = await api(main, "PUT", "/api/services", {
      body: read2.body,
      headers: { "if-match": read2.headers.etag ?? "" },
    });
    expect([afterDelete.status, afterDelete.body]).toEqual([409, expect.stringMatching(/deleted after revision/)]);
    expect(await keys()).toEqual([`${ROUTES}/a.test:${port}`]);
    expect((await api(main, "DELETE", `/api/services/t.test:${port}`)).status).toBe(404);
  });

  test("two concurrent PUTs that read one revision: exactly one is written, the other is 409 naming the conflict", async () => {
    let conflicts = 0;
    for (let round = 0; round < 3 && conflicts === 0; round++) {
      // etcd frozen while both arrive: both read once it thaws, at the same revision, before either writes.
      etcd.pause();
      let both: Promise<Reply>[];
      try {
        both = ["a", "b"].map((app) =>
          api(main, "PUT", "/api/services", { body: doc(plain("a.test", `${app}${round}`), withTls()) }),
        );
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        etcd.resume();
      }
      const results = await Promise.all(both);
      const codes = results.map((r) => r.status).sort();
      if (codes[0] === 200 && codes[1] === 409) {
        conflicts++;
        const loser = results.find((r) => r.status === 409);
        expect(loser?.json<{ error: string }>().error).toMatch(
          new RegExp(
            `^conflict: the table under ${ROUTES} changed after revision \\d+ \\(another writer\\): nothing was written`,
          ),
        );
        const winner = results.findIndex((r) => r.status === 200) === 0 ? "a" : "b";
        const now = (await etcd.ctl(["get", `${ROUTES}/a.test:${port}`, "--print-value-only"])).stdout;
        expect(now).toContain(`"${winner}${round}"`);
      } else expect(codes, results.map((r) => r.body).join("\n")).toEqual([200, 200]);
    }
    expect(conflicts).toBe(1);
    // Back to a-web for the tests after this one.
    expect((await api(main, "PUT", `/api/services/a.test:${port}`, { body: plain("a.test", "a") })).status).toBe(200);
  });

  test("one server: PUT validates it against the table; a body over the limit is 413", async () => {
    const b = await api(main, "PUT", `/api/services/b.test:${port}`, { body: plain("b.test", "b") });
    expect(b.status, b.body).toBe(200);
    await eventually(async () => (await who(main, "b.test")) === "127.0.0.3", 20_000, "b.test served");
    // The URL must name the server of the body.
    const wrong = await api(main, "PUT", `/api/services/c.test:${port}`, { body: plain("b.test", "b") });
    expect([wrong.status, wrong.body]).toEqual([422, expect.stringMatching(/the URL names c\.test/)]);
    // A plain server on another server's TLS port conflicts with the table.
    expect((await api(main, "PUT", `/api/services/t.test:${port}`, { body: withTls() })).status).toBe(200);
    const clash = await api(main, "PUT", `/api/services/c.test:${sslPort}`, {
      body: { ...plain("c.test", "a"), frontend_port: sslPort },
    });
    expect([clash.status, clash.body]).toEqual([422, expect.stringMatching(/port .* TLS/)]);

    const rev = await etcd.revision();
    // Each time: the client sends its whole body and reads the answer (never a connection closed under it).
    const huge = " ".repeat((8 << 20) + 1);
    for (let i = 0; i < 3; i++) {
      const big = await api(main, "PUT", "/api/services", { body: huge });
      expect([big.status, big.body]).toEqual([413, expect.stringMatching(/larger than 8388608 bytes/)]);
    }
    expect(await etcd.revision()).toBe(rev);
  });

  test("metrics: the table's origin, its revision and the rejected keys", async () => {
    await etcd.ctl([
      "put",
      `${ROUTES}/bad.test:${port}`,
      JSON.stringify({ domain_name: "bad.test", frontend_port: port, routes: { "/": { app: "a" } } }),
    ]);
    const rev = await etcd.revision();
    const metrics = await eventually(
      async () => {
        const m = (await api(main, "GET", "/metrics")).body;
        return sample(m, "nginx_lb_routes_revision") === rev ? m : null;
      },
      20_000,
      "the table's revision in /metrics",
    );
    expect(sample(metrics, "nginx_lb_routes_source_info", { kind: "etcd", source: ROUTES })).toBe(1);
    expect(sample(metrics, "nginx_lb_routes_rejected_keys")).toBe(1);
    expect(sample(metrics, "nginx_lb_routes_connected")).toBe(1);
    // GET leaves the bad key out and says how many were.
    const got = await api(main, "GET", "/api/services");
    expect(got.headers["x-nginx-lb-rejected-keys"]).toBe("1");
    expect(got.body).not.toContain("bad.test");
    await etcd.ctl(["del", `${ROUTES}/bad.test:${port}`]);
  });
});

describe("no write API", () => {
  test("without a configured token: writes are 405 saying why; reads and the dashboard (origin, rejected keys) work", async () => {
    const open = await controller("127.0.0.21", null);
    const rev = await etcd.revision();
    for (const token of [null, TOKEN]) {
      const r = await api(open, "PUT", "/api/services", { body: doc(plain("a.test", "b")), token });
      expect([r.status, r.body]).toEqual([405, expect.stringMatching(/without an admin token.*NGINX_LB_ADMIN_TOKEN/)]);
    }
    expect((await api(open, "DELETE", `/api/services/a.test:${port}`, { token: null })).status).toBe(405);
    expect(await etcd.revision()).toBe(rev);
    const got = await api(open, "GET", "/api/services", { token: null });
    expect(got.status).toBe(200);
    expect(got.body).not.toMatch(/PRIVATE KEY/);

    // The dashboard's header names the table's origin and revision; a rejected key is listed with its reason.
    await etcd.ctl([
      "put",
      `${ROUTES}/bad.test:${port}`,
      JSON.stringify({ domain_name: "bad.test", frontend_port: port, routes: { "/": { app: "a" } } }),
    ]);
    const badRev = await etcd.revision();
    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${open.admin}/`, { timeout: 15_000 });
      const origin = page.locator('#health [data-routes="etcd"]');
      await origin.filter({ hasText: `@${badRev}` }).waitFor({ timeout: 15_000 });
      expect(await origin.textContent()).toBe(`routes etcd ${ROUTES} @${badRev}, 1 rejected`);
      const rejected = page.locator('#problems [data-problem="error"]', { hasText: `bad.test:${port}` });
      await rejected.first().waitFor({ timeout: 5_000 });
      expect(await rejected.first().textContent()).toMatch(/etcd key \(server absent\).*routes\["\/"\]\.service/);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await etcd.ctl(["del", `${ROUTES}/bad.test:${port}`]);
    }
    await open.lb.stop();
  });

  test("with a routes file: 404 saying to edit the file and send SIGUSR2; metrics name the file", async () => {
    const lb = await startAdminLb({
      pool,
      endpoints: { "web-api": { "127.0.0.2": { weight: 1 } } },
      env: { NGINX_LB_ADMIN_TOKEN: TOKEN },
    });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const put = await lb.admin("/api/services", { method: "PUT", headers: auth, body: "{}" });
    expect([put.status, put.body]).toEqual([404, expect.stringMatching(/edit it and send SIGUSR2/)]);
    expect(put.body).toContain(lb.services);
    expect((await lb.admin("/api/services", { headers: auth })).status).toBe(404);
    const metrics = (await lb.admin("/metrics", { headers: auth })).body;
    expect(sample(metrics, "nginx_lb_routes_source_info", { kind: "file", source: lb.services })).toBe(1);
    expect(sample(metrics, "nginx_lb_routes_rejected_keys")).toBe(0);
    expect(Number.isNaN(sample(metrics, "nginx_lb_routes_revision"))).toBe(true);
  });
});
