import { execFile } from "node:child_process";
import http from "node:http";
import { readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultServers, sample, startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, sleep, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePorts, NGINX, tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf } from "../helpers/tls.js";

/** The admin server of a real `nginx-lb run`, asked what an operator (or Prometheus) asks it. */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

const endpoints = () => ({
  "web-api": { "127.0.0.2": { weight: 3 }, "127.0.0.3": { weight: 0 } },
  "api-api": { "127.0.0.3": { weight: 1 } },
  "spare-api": { "127.0.0.4": { weight: 1 } },
});

interface Route {
  prefix: string;
  label: string;
  upstream: string;
  endpoints: { address: string; weight: number; role: string }[];
}
interface RegistryView {
  registry: {
    valid: boolean;
    errors: { path: string; message: string }[];
    warnings: { path: string; message: string }[];
  };
}
interface View {
  ready: { ready: boolean; why: string };
  services: { valid: boolean; errors: { path: string; message: string }[] };
  registry: { connected: boolean };
  nginx: { running: boolean; generation: string | null };
  servers: { domain: string; port: number; tlsPort?: number; routes: Route[] }[];
  applies: { at: string; result: string; action: string; ms: { total: number }; reason: string }[];
}

/** The status CLI, as an operator runs it. */
function statusCli(
  adminUrl: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "status", "--admin", adminUrl],
      { cwd: ROOT, timeout: 30_000, env: { ...process.env, NO_COLOR: "1", ...env } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe("admin server", () => {
  it("reports every server, route and endpoint, and counts real requests per route in /metrics", async () => {
    const t = await startAdminLb({ pool, endpoints: endpoints() });
    expect((await t.admin("/healthz")).status).toBe(200);
    // Without a token, a foreign Host (a DNS-rebinding web page) is turned away; loopback names are served.
    expect((await t.admin("/api/status", { host: `rebind.example:${t.adminPort}` })).status).toBe(421);
    expect((await t.admin("/api/status", { host: `localhost:${t.adminPort}` })).status).toBe(200);
    expect((await t.admin("/api/status", { method: "POST" })).status).toBe(405);
    expect((await t.admin("/readyz")).body).toMatch(/^ready: nginx runs generation [0-9a-f]+/);

    const view = (await t.admin("/api/status")).json<View>();
    expect(view.ready.ready).toBe(true);
    expect(view.services.valid).toBe(true);
    expect(view.registry.connected).toBe(true);
    const routes = view.servers.flatMap((s) => s.routes);
    const by = (p: string) => routes.find((r) => r.prefix === p);
    expect(routes.map((r) => r.label).sort()).toEqual(
      [`a.test:${t.sitePort}/`, `a.test:${t.sitePort}/api`, `a.test:${t.sitePort}/gone`].sort(),
    );
    // No request yet: no endpoint has traffic figures.
    expect(by("/")?.endpoints).toEqual([
      { address: `127.0.0.2:${pool.port}`, weight: 3, role: "primary", traffic: null },
      { address: `127.0.0.3:${pool.port}`, weight: 0, role: "down", traffic: null },
    ]);
    expect(by("/api")?.endpoints).toEqual([
      { address: `127.0.0.3:${pool.port}`, weight: 1, role: "primary", traffic: null },
      { address: `127.0.0.4:${pool.port}`, weight: 1, role: "backup", traffic: null },
    ]);
    expect(by("/gone")?.endpoints).toEqual([]);
    expect(view.applies[0]).toMatchObject({ result: "applied", action: "start" });
    expect(view.applies[0]?.ms.total).toBeGreaterThan(0);

    for (let i = 0; i < 20; i++) expect((await t.site(`/x${i}`)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await t.site("/gone")).status).toBe(503);
    const root = { route: `a.test:${t.sitePort}/`, upstream: by("/")?.upstream ?? "" };
    const gone = { route: `a.test:${t.sitePort}/gone`, upstream: by("/gone")?.upstream ?? "" };
    // nginx counts them, the controller reads the counts once a second: poll until they are counted.
    const metrics = await eventually(
      async () => {
        const m = (await t.admin("/metrics")).body;
        const ok2xx = sample(m, "nginx_lb_route_requests_total", { ...root, class: "2xx" }) ?? 0;
        const err5xx = sample(m, "nginx_lb_route_requests_total", { ...gone, class: "5xx" }) ?? 0;
        return ok2xx >= 20 && err5xx >= 5 ? m : null;
      },
      10_000,
      "per-route counters in /metrics",
    );
    expect(sample(metrics, "nginx_lb_route_requests_total", { ...root, class: "2xx" })).toBe(20);
    expect(sample(metrics, "nginx_lb_route_upstream_response_seconds_count", root)).toBe(20);
    const endpoint = { route: root.route, endpoint: `127.0.0.2:${pool.port}` };
    expect(sample(metrics, "nginx_lb_endpoint_requests_total", endpoint)).toBe(20);
    expect(sample(metrics, "nginx_lb_endpoint_errors_total", endpoint)).toBe(0);
    expect(sample(metrics, "nginx_lb_route_response_bytes_total", root)).toBeGreaterThan(20 * 100);
    expect(sample(metrics, "nginx_lb_applies_total", { result: "applied", action: "start" })).toBe(1);
    expect(sample(metrics, "nginx_lb_render_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(metrics, "nginx_lb_nginx_test_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(metrics).toContain("# TYPE nginx_lb_nginx_reload_duration_seconds histogram");
    expect(sample(metrics, "nginx_lb_config_generation_info", { generation: view.nginx.generation ?? "" })).toBe(1);
    expect(sample(metrics, "nginx_lb_upstream_endpoints", { ...root, role: "primary" })).toBe(1);
    expect(sample(metrics, "nginx_lb_upstream_endpoints", { ...root, role: "down" })).toBe(1);
    expect(sample(metrics, "nginx_lb_services_valid")).toBe(1);
    expect(sample(metrics, "nginx_lb_registry_connected")).toBe(1);
    expect(sample(metrics, "nginx_lb_seconds_since_last_successful_apply")).toBeGreaterThanOrEqual(0);
    // Dynamic endpoints (the default where nginx has the Lua module): the pushed version is reported.
    expect(sample(metrics, "nginx_lb_endpoints_pushed_version", { mode: "dynamic" })).toBeGreaterThan(0);

    const rates = await eventually(
      async () => {
        const v = (await t.admin("/api/status")).json<View & { servers: { routes: { traffic: unknown }[] }[] }>();
        const r = v.servers[0]?.routes.find((x) => (x as unknown as Route).prefix === "/gone") as unknown as
          { traffic: { requests: number; errorRate: number | null } } | undefined;
        return r?.traffic.requests === 5 ? r.traffic : null;
      },
      10_000,
      "traffic in /api/status",
    );
    expect(rates.errorRate === null || rates.errorRate === 1).toBe(true);

    const cli = await statusCli(t.adminUrl);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/ready\s+yes/);
    expect(cli.stdout).toContain(`127.0.0.4:${pool.port} w1 backup`);
    expect(cli.stdout).toMatch(/\/gone\s+gone-api:\d+\s+none \(503\)/);

    // An invalid edit: reported with its JSON path, the old routes stay in force.
    await writeFile(
      t.services,
      JSON.stringify({ version: "0.1", servers: [{ domain_name: "a.test", frontend_port: "nope", routes: {} }] }),
    );
    const invalid = await eventually(
      async () => {
        const v = (await t.admin("/api/status")).json<View>();
        return v.services.valid ? null : v;
      },
      10_000,
      "services.json reported invalid",
    );
    expect(invalid.services.errors.map((e) => e.path)).toContain("servers[0].frontend_port");
    expect(invalid.servers.flatMap((s) => s.routes)).toHaveLength(3);
    expect(sample((await t.admin("/metrics")).body, "nginx_lb_services_valid")).toBe(0);
    expect((await t.site("/")).status).toBe(200);
  });

  it("never shows TLS key material, in any admin response or in the log", async () => {
    const certs = await tempDir("nginx-lb-admin-certs-");
    const ca = await makeCa(certs);
    const leaf = await makeLeaf(ca, certs, { names: ["a.test"] });
    const [tlsPort = 0] = await freePorts(1);
    const t = await startAdminLb({
      pool,
      endpoints: endpoints(),
      servers: (sitePort) => [
        {
          ...(defaultServers(pool)(sitePort)[0] as object),
          ssl_port: tlsPort,
          ssl_certificate: leaf.cert,
          ssl_certificate_key: leaf.key,
        },
      ],
    });
    expect((await get(`https://127.0.0.1:${tlsPort}/`, { host: "a.test", ca: ca.cert })).status).toBe(200);
    const body = leaf.key
      .split("\n")
      .filter((l) => l && !l.startsWith("-----"))
      .join("");
    const pieces = [body, ...body.match(/.{24}/g)!.slice(0, 4)];
    expect(body.length).toBeGreaterThan(100);

    const view = (await t.admin("/api/status")).json<View>();
    expect(view.servers[0]?.tlsPort).toBe(tlsPort);
    const events = await firstEvent(`${t.adminUrl}/api/events`);
    expect(events).toContain('"tlsPort"');
    const responses = [
      ...(
        await Promise.all(["/", "/api/status", "/metrics", "/healthz", "/readyz", "/nope"].map((p) => t.admin(p)))
      ).map((r) => r.body),
      events,
      (await statusCli(t.adminUrl)).stdout,
      JSON.stringify(t.lb.lines),
    ];
    for (const text of responses) {
      for (const p of pieces) expect(text.includes(p)).toBe(false);
      expect(text).not.toMatch(/PRIVATE KEY/);
    }
  });

  it("refuses to start on a non-loopback address without a token, and touches no nginx", async () => {
    const dir = await tempDir("nginx-lb-admin-");
    const [sitePort = 0, adminPort = 0] = await freePorts(2);
    const services = join(dir, "services.json");
    await writeServices(services, defaultServers(pool)(sitePort));
    const lb = await startController({
      stateDir: join(dir, "state"),
      services,
      args: ["--admin-listen", `0.0.0.0:${adminPort}`],
      readyMsg: "refusing to start",
    });
    expect(await Promise.race([lb.exited, sleep(15_000).then(() => "still running")])).toBe(1);
    expect(lb.find(/NGINX_LB_ADMIN_TOKEN/)).not.toHaveLength(0);
    expect(lb.find(/nginx started/)).toHaveLength(0);
    await expect(get(`http://127.0.0.1:${sitePort}/`, { host: "a.test", timeoutMs: 1000 })).rejects.toThrow();
  });

  it("off loopback with a token: 401 without it or with a wrong one, 200 with it; the token is never logged", async () => {
    const token = `tok-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    const dir = await tempDir("nginx-lb-admin-token-");
    const tokenFile = join(dir, "token");
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const t = await startAdminLb({
      pool,
      endpoints: endpoints(),
      adminHost: "0.0.0.0",
      args: ["--admin-token-file", tokenFile],
    });
    const url = (p: string) => `${t.adminUrl}${p}`;
    for (const path of ["/api/status", "/metrics", "/api/events"]) {
      expect((await get(url(path))).status).toBe(401);
      expect((await get(url(path), { headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
      expect((await get(url(path), { headers: { authorization: "Bearer " } })).status).toBe(401);
    }
    expect((await get(url("/"), { headers: { accept: "text/html" } })).body).toContain("admin token");
    expect((await get(url("/api/status"), { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await get(url("/metrics"), { headers: { authorization: `Bearer ${token}` } })).body).toContain(
      "nginx_lb_applies_total",
    );
    expect((await get(url("/"), { headers: { cookie: `nlb_admin_token=${token}` } })).body).toContain("<title>");
    expect((await get(url("/healthz"))).status).toBe(200);
    const denied = await statusCli(t.adminUrl);
    expect(denied.code).toBe(2);
    expect(denied.stderr).toContain("401");
    const allowed = await statusCli(t.adminUrl, { NGINX_LB_ADMIN_TOKEN: token });
    expect(allowed.code).toBe(0);
    expect(allowed.stdout).toMatch(/ready\s+yes/);
    expect(JSON.stringify(t.lb.lines)).not.toContain(token);
  });

  it("/readyz answers 503 with why while nginx cannot run, and 200 once it runs", async () => {
    const [sitePort = 0, adminPort = 0] = await freePorts(2);
    // Another process holds the site's port: nginx cannot start.
    const holder: Server = await new Promise((r) => {
      const s = createServer().listen(sitePort, "127.0.0.1", () => r(s));
    });
    const dir = await tempDir("nginx-lb-admin-");
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    await writeServices(services, defaultServers(pool)(sitePort));
    await writeFile(backends, JSON.stringify(endpoints()));
    const lb = await startController({
      stateDir: join(dir, "state"),
      services,
      args: ["--backends", backends, "--admin-listen", `127.0.0.1:${adminPort}`],
    });
    const admin = (p: string) => get(`http://127.0.0.1:${adminPort}${p}`);
    await lb.waitFor(/apply failed/);
    const notReady = await admin("/readyz");
    expect(notReady.status).toBe(503);
    expect(notReady.body).toMatch(/^not ready: nginx is not running/);
    expect(notReady.body).toContain("Address already in use");
    const cli = await statusCli(`http://127.0.0.1:${adminPort}`);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/^nginx-lb status: not ready: nginx is not running/);
    expect((await admin("/healthz")).status).toBe(200);
    expect(sample((await admin("/metrics")).body, "nginx_lb_nginx_running")).toBe(0);
    await new Promise((r) => holder.close(r));
    await eventually(async () => (await admin("/readyz")).status === 200, 20_000, "/readyz 200 after the port is free");
    expect((await get(`http://127.0.0.1:${sitePort}/`, { host: "a.test" })).status).toBe(200);
  });
});

describe("inputs rejected or warned about", () => {
  it("an invalid backends file and every warning show in /api/status, /metrics and nginx-lb status (exit 1)", async () => {
    const t = await startAdminLb({
      pool,
      endpoints: { ...endpoints(), "api-api": { "127.0.0.3": { weight: "heavy" } } } as unknown as Parameters<
        typeof startAdminLb
      >[0]["endpoints"],
    });
    const registryOf = async () => (await t.admin("/api/status")).json<RegistryView>().registry;
    // A warning (an odd weight): reported with its path everywhere, yet nothing is wrong enough to fail a script.
    const warned = await registryOf();
    expect(warned.valid).toBe(true);
    expect(warned.warnings).toEqual([expect.objectContaining({ path: '["api-api"]["127.0.0.3"]' })]);
    let m = (await t.admin("/metrics")).body;
    expect(sample(m, "nginx_lb_config_warnings", { source: "registry" })).toBe(1);
    expect(sample(m, "nginx_lb_config_warnings", { source: "services" })).toBe(0);
    expect(sample(m, "nginx_lb_registry_valid")).toBe(1);
    // `--admin` also takes HOST:PORT, the form --admin-listen takes.
    let cli = await statusCli(`127.0.0.1:${t.adminPort}`);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/warning\s+registry\s+\["api-api"\]\["127\.0\.0\.3"\]\s+weight must be/);

    // Rejected as a whole: a name that is no address. The endpoints in force keep serving.
    await t.setEndpoints({ ...endpoints(), "web-api": { "not-an-ip": { weight: 1 } } });
    const invalid = await eventually(
      async () => {
        const r = await registryOf();
        return r.valid ? null : r;
      },
      10_000,
      "the backends file reported invalid",
    );
    expect(invalid.errors.map((e) => e.path)).toEqual(['["web-api"]["not-an-ip"]']);
    expect(sample((await t.admin("/metrics")).body, "nginx_lb_registry_valid")).toBe(0);
    cli = await statusCli(t.adminUrl);
    expect(cli.code).toBe(1);
    expect(cli.stdout).toMatch(/registry\s+invalid/);
    expect(cli.stdout).toMatch(/error\s+registry\s+\["web-api"\]\["not-an-ip"\]/);
    expect(cli.stderr).toMatch(/the registry content is invalid/);
    expect(t.lb.find(/backends file is invalid; the endpoints in force stay until it is fixed/)).not.toHaveLength(0);
    expect((await t.site("/")).status).toBe(200);

    // Fixed: valid again, exit 0.
    await t.setEndpoints(endpoints());
    await eventually(async () => (await registryOf()).valid, 10_000, "the backends file valid again");
    m = (await t.admin("/metrics")).body;
    expect(sample(m, "nginx_lb_registry_valid")).toBe(1);
    expect(sample(m, "nginx_lb_config_warnings", { source: "registry" })).toBe(0);
    expect((await statusCli(t.adminUrl)).code).toBe(0);

    // An invalid routing file: ready (the last valid routes serve), but a script must hear of it.
    await writeFile(t.services, "{ not json");
    await eventually(
      async () => !(await t.admin("/api/status")).json<View>().services.valid,
      10_000,
      "services.json invalid",
    );
    cli = await statusCli(t.adminUrl);
    expect(cli.code).toBe(1);
    expect(cli.stdout).toMatch(/ready\s+yes/);
    expect(cli.stderr).toContain(`the routing file ${t.services} is invalid`);
  });

  it("nginx-lb status says in one line that nothing answers, exit 2", async () => {
    const [port = 0] = await freePorts(1);
    const cli = await statusCli(`127.0.0.1:${port}`);
    expect(cli.code).toBe(2);
    expect(cli.stderr.trim().split("\n")).toEqual([
      `nginx-lb status: cannot reach http://127.0.0.1:${port}: connection refused (is nginx-lb run serving its admin server there? see --admin-listen)`,
    ]);
  });
});

describe("event-stream slots", () => {
  it("bounds streams per client address and keeps slots for the token holder, whoever else holds the rest", async () => {
    const t = await startAdminLb({ pool, endpoints: endpoints() });
    // No token configured: the controller wrote a local one into its state dir for the operator.
    const token = (await readFile(join(t.dir, "state/admin-token"), "utf8")).trim();
    expect(token).toMatch(/^[0-9a-f]{48}$/);
    const open: Stream[] = [];
    try {
      const anon = async (from: string) => {
        const s = await openStream(t.adminPort, from);
        open.push(s);
        return s;
      };
      for (let i = 0; i < 8; i++) expect((await anon("127.0.0.1")).status).toBe(200);
      const perAddress = await anon("127.0.0.1");
      expect(perAddress.status).toBe(503);
      expect(perAddress.body).toMatch(/127\.0\.0\.1 already holds 8 event streams/);
      // Other loopback source addresses (any local user can bind them) fill the slots open to everyone: 28 of 32.
      for (const from of ["127.0.0.2", "127.0.0.3"])
        for (let i = 0; i < 8; i++) expect((await anon(from)).status).toBe(200);
      for (let i = 0; i < 4; i++) expect((await anon("127.0.0.4")).status).toBe(200);
      const full = await anon("127.0.0.5");
      expect(full.status).toBe(503);
      expect(full.body).toMatch(/all 28 event streams for clients without the admin token are open/);
      expect(full.body).toMatch(/Authorization: Bearer/);
      // A wrong token is no token.
      expect((await openStream(t.adminPort, "127.0.0.5", `${token}0`).then((s) => (open.push(s), s))).status).toBe(503);
      // The operator, with the token from the state dir, still gets a live stream with the status in it.
      const operator = await openStream(t.adminPort, "127.0.0.1", token);
      open.push(operator);
      expect(operator.status).toBe(200);
      expect(operator.body).toContain("event: status");
      // A closed stream frees its slot.
      open.find((s) => s.status === 200 && s !== operator)?.close();
      await eventually(
        async () => {
          const s = await openStream(t.adminPort, "127.0.0.5");
          open.push(s);
          return s.status === 200;
        },
        5_000,
        "a slot freed by a closed stream",
      );
      // Plain requests are not streams: they are still served.
      expect((await t.admin("/api/status")).status).toBe(200);
    } finally {
      for (const s of open) s.close();
    }
  });
});

describe("traffic figures off", () => {
  it("--no-traffic-log renders no access records and keeps the rest of the admin server", async () => {
    const t = await startAdminLb({ pool, endpoints: endpoints(), args: ["--no-traffic-log"] });
    const conf = await readFile(join(t.dir, "state/nginx.conf"), "utf8");
    // No route label set for a record: the router's own `set $nlb_route ""` (routes pushed) labels nothing it logs.
    expect(conf).not.toMatch(/syslog|set \$nlb_route nlb_|map \$host \$nlb_route|traffic|nginx_lb_stats/);
    // The one log-phase call judges attempts for outlier ejection only.
    expect(conf).toContain(`log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_outlier").log(ctx) }`);
    for (let i = 0; i < 5; i++) expect((await t.site("/")).status).toBe(200);
    const m = (await t.admin("/metrics")).body;
    expect(m).not.toMatch(/^nginx_lb_route_requests_total\{/m);
    expect(sample(m, "nginx_lb_upstream_endpoints", { route: `a.test:${t.sitePort}/`, role: "primary" })).toBe(1);
  });
});

describe("readiness when nginx dies", () => {
  it("/readyz turns 503 while nginx is down and cannot be restarted, and 200 once it runs again", async () => {
    // An nginx that refuses to start while a flag file exists: the operator's broken binary, made switchable.
    const dir = await tempDir("nginx-lb-admin-down-");
    const flag = join(dir, "broken");
    const wrapper = join(dir, "nginx");
    await writeFile(
      wrapper,
      `#!/bin/sh\nif [ -e '${flag}' ]; then echo 'nginx: [emerg] broken on purpose' >&2; exit 1; fi\nexec ${NGINX} "$@"\n`,
      { mode: 0o755 },
    );
    const t = await startAdminLb({ pool, endpoints: endpoints(), args: ["--nginx", wrapper] });
    await writeFile(flag, "");
    const pid = Number((await readFile(join(t.dir, "state/nginx.pid"), "utf8")).trim());
    process.kill(pid, "SIGKILL");
    const down = await eventually(
      async () => {
        const r = await t.admin("/readyz");
        return r.status === 503 ? r : null;
      },
      10_000,
      "/readyz 503 after nginx died",
    );
    expect(down.body).toMatch(/^not ready: nginx is not running/);
    // Stays down while nginx cannot start (the controller keeps retrying with backoff).
    await sleep(1000);
    expect((await t.admin("/readyz")).status).toBe(503);
    expect(sample((await t.admin("/metrics")).body, "nginx_lb_nginx_running")).toBe(0);
    await rm(flag);
    await eventually(async () => (await t.admin("/readyz")).status === 200, 20_000, "/readyz 200 after restart");
    expect((await t.site("/")).status).toBe(200);
  });
});

/** The first server-sent event of a stream, as text. */
function firstEvent(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 5000);
    fetch(url, { signal: controller.signal })
      .then(async (res) => {
        const reader = res.body!.getReader();
        let text = "";
        for (let i = 0; i < 100 && !text.includes("\n\n"); i++) {
          const { value, done } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
        }
        clearTimeout(timer);
        controller.abort();
        resolve(text);
      })
      .catch(reject);
  });
}

interface Stream {
  readonly status: number;
  /** The first chunk of a stream, or the whole body of a refusal. */
  readonly body: string;
  close(): void;
}

/** Opens /api/events from a given loopback source address, optionally with a bearer token. */
function openStream(port: number, localAddress: string, token?: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: "127.0.0.1",
        port,
        path: "/api/events",
        localAddress,
        agent: false,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      },
      (res) => {
        const close = () => req.destroy();
        res.setEncoding("utf8");
        if (res.statusCode === 200) res.once("data", (chunk: string) => resolve({ status: 200, body: chunk, close }));
        else {
          let body = "";
          res.on("data", (c: string) => (body += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body, close }));
        }
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error("no answer from /api/events within 5 s")));
    req.on("error", reject);
  });
}
