import { appendFile, chmod, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { asNobody, asNobodyShell } from "../helpers/nobody.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sample, startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx } from "../helpers/nginx.js";

/**
 * A local unprivileged user (nobody, the user nginx's workers run as) tries to forge per-route traffic figures of a
 * real `nginx-lb run`. Dynamic mode (nginx counts in its shared dict): through the control server's counters endpoint
 * (read-only, and only with the token) and the workers' memory. Reload mode (a record file): through the file,
 * through a worker's open descriptor of it, and through the loopback UDP port that used to carry the records.
 * Nothing it writes may reach /metrics.
 */

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

/** The pids of the nginx workers (children of the master named in the pid file). */
async function workerPids(stateDir: string): Promise<number[]> {
  const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
  const children = await readFile(`/proc/${master}/task/${master}/children`, "utf8");
  return children.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** UDP sockets bound to this local port (from /proc/net/udp and udp6). */
async function udpBound(port: number): Promise<number> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let n = 0;
  for (const table of ["/proc/net/udp", "/proc/net/udp6"]) {
    const lines = (await readFile(table, "utf8")).split("\n").slice(1);
    n += lines.filter((l) => (l.trim().split(/\s+/)[1] ?? "").endsWith(hex)).length;
  }
  return n;
}

const servers = (sitePort: number) => [
  {
    domain_name: "a.test",
    frontend_port: sitePort,
    routes: { "/": { app: "web", service: "api", port: pool.port } },
  },
];

describe("traffic figures forged by another local user (dynamic endpoints: counters in nginx)", () => {
  it("nobody can neither read nor add counts; only nginx's own counts reach /metrics", async () => {
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": { "127.0.0.2": { weight: 1 } } },
      servers,
      args: ["--endpoints-mode", "dynamic", "--worker-processes", "2"],
    });
    const stateDir = join(t.dir, "state");
    await chmod(t.dir, 0o755);
    await chmod(stateDir, 0o755);
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).toContain(
      `log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_outlier").log(ctx); require("nginx_lb_stats").log(ctx) }`,
    );
    expect(conf).not.toContain("traffic.tsv");
    const control = /listen 127\.0\.0\.1:(\d+);\n\s+access_log off;/.exec(conf)?.[1];
    const token = /require\("nginx_lb_stats"\)\.serve\("([0-9a-f]+)"\)/.exec(conf)?.[1];
    expect(control).toBeDefined();
    expect(token).toBeDefined();
    const url = `http://127.0.0.1:${control}/nginx-lb/stats`;

    // 1. The counters endpoint: no token, a guessed one, and every method that could write.
    const answers: string[] = [];
    for (const method of ["GET", "POST", "PUT", "DELETE"])
      for (const guess of ["", "0123456789abcdef0123456789abcdef"]) {
        const r = await asNobody(
          "curl",
          ...["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", "-X", method],
          ...(method !== "GET" ? ["--data-binary", "c nlb_0000000000000000 5xx 1000\n"] : []),
          ...(guess ? ["-H", `X-Nginx-Lb-Token: ${guess}`] : []),
          url,
        );
        answers.push(`${method} ${guess ? "guessed" : "none"}: ${r.stdout}`);
      }
    expect(answers.filter((a) => !a.endsWith(": 401"))).toEqual([]);

    // 2. The counters live in nginx's memory only: the workers run as nobody, but their memory stays closed to it.
    const workers = await workerPids(stateDir);
    expect(workers.length).toBeGreaterThan(0);
    for (const w of workers) {
      const mem = await asNobodyShell('exec 3<>"$1"', `/proc/${w}/mem`);
      expect(mem.code, `/proc/${w}/mem`).not.toBe(0);
      expect(mem.stderr).toMatch(/Permission denied/);
    }

    // Real requests are counted; nothing else is.
    const view = (await t.admin("/api/status")).json<{
      servers: { routes: { upstream: string; label: string }[] }[];
    }>();
    const route = view.servers[0]?.routes[0];
    const labels = { route: route?.label ?? "", upstream: route?.upstream ?? "" };
    for (let i = 0; i < 5; i++) expect((await t.site(`/r${i}`)).status).toBe(200);
    const m = await eventually(
      async () => {
        const body = (await t.admin("/metrics")).body;
        return sample(body, "nginx_lb_route_requests_total", { ...labels, class: "2xx" }) === 5 ? body : null;
      },
      10_000,
      "the five real requests in /metrics",
    );
    expect(sample(m, "nginx_lb_route_requests_total", { ...labels, class: "5xx" })).toBeNull();
    for (const reason of ["no_route", "unknown_route", "unknown_endpoint", "malformed"])
      expect(sample(m, "nginx_lb_traffic_records_ignored_total", { reason }) ?? 0).toBe(0);

    // The control: the same endpoint with the token answers (read-only: a write is refused even then).
    const withToken = ["-s", "-m", "3", "-H", `X-Nginx-Lb-Token: ${token}`];
    const read = await asNobody("curl", ...withToken, "-w", "\n%{http_code}", url);
    expect(read.stdout).toMatch(/^nginx-lb-stats 1\n[\s\S]*end counters=\d+\n\n200$/);
    const write = await asNobody("curl", ...withToken, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url);
    expect(write.stdout).toBe("405");
  });
});

describe("traffic figures forged by another local user (reload endpoints: the record file)", () => {
  const mode = "reload";
  it("nobody cannot write a record by any channel; only nginx's own records are counted", async () => {
    const t = await startAdminLb({
      pool,
      endpoints: { "web-api": { "127.0.0.2": { weight: 1 } } },
      servers: (sitePort) => [
        {
          domain_name: "a.test",
          frontend_port: sitePort,
          routes: { "/": { app: "web", service: "api", port: pool.port } },
        },
      ],
      args: ["--endpoints-mode", mode],
    });
    const stateDir = join(t.dir, "state");
    // The worst case an install may leave: a state dir (and its parent) every user can enter. The record file must
    // stay closed to them by itself.
    await chmod(t.dir, 0o755);
    await chmod(stateDir, 0o755);
    const file = join(stateDir, "logs/traffic.tsv");
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).toContain(`access_log ${file} nlb buffer=64k flush=1s;`);
    expect(conf).not.toContain("syslog");

    const view = (await t.admin("/api/status")).json<{
      servers: { routes: { upstream: string; label: string }[] }[];
    }>();
    const route = view.servers[0]?.routes[0];
    expect(route).toBeDefined();
    const labels = { route: route?.label ?? "", upstream: route?.upstream ?? "" };
    const forged = [labels.upstream, "500", "0.001", "0.001", "1", "-"].join("\t");

    // 1. The file itself.
    const direct = await asNobodyShell(
      'for i in $(seq 50); do printf "%s\\n" "$1" >> "$2" || exit 1; done',
      forged,
      file,
    );
    expect(direct.code).not.toBe(0);
    expect(direct.stderr).toMatch(/Permission denied/);

    // 2. A worker's descriptor of the file, through /proc (the workers run as nobody).
    const workers = await workerPids(stateDir);
    expect(workers.length).toBeGreaterThan(0);
    const fds: string[] = [];
    for (const w of workers)
      for (const fd of await readdir(`/proc/${w}/fd`))
        if ((await readlink(`/proc/${w}/fd/${fd}`).catch(() => "")) === file) fds.push(`/proc/${w}/fd/${fd}`);
    expect(fds.length).toBeGreaterThan(0);
    for (const fd of fds) {
      const viaProc = await asNobodyShell('printf "%s\\n" "$1" >> "$2"', forged, fd);
      expect(viaProc.code).not.toBe(0);
      expect(viaProc.stderr).toMatch(/Permission denied/);
    }

    // 3. The loopback UDP port that used to carry the records (the admin port number): nothing listens there now.
    expect(await udpBound(t.adminPort)).toBe(0);
    const udp = await asNobodyShell(
      'for i in $(seq 50); do printf "%s" "$1" > "/dev/udp/127.0.0.1/$2"; done; exit 0',
      forged,
      String(t.adminPort),
    );
    expect(udp.code).toBe(0);

    // The local operator token (the reserved event-stream slots) is not readable either.
    expect((await asNobodyShell('cat "$1"', join(stateDir, "admin-token"))).code).not.toBe(0);

    // Real requests are counted; none of the forged 5xx records is.
    for (let i = 0; i < 5; i++) expect((await t.site(`/r${i}`)).status).toBe(200);
    const m = await eventually(
      async () => {
        const body = (await t.admin("/metrics")).body;
        return sample(body, "nginx_lb_route_requests_total", { ...labels, class: "2xx" }) === 5 ? body : null;
      },
      10_000,
      "the five real requests in /metrics",
    );
    expect(sample(m, "nginx_lb_route_requests_total", { ...labels, class: "5xx" })).toBeNull();
    for (const reason of ["no_route", "unknown_route", "malformed"])
      expect(sample(m, "nginx_lb_traffic_records_ignored_total", { reason }) ?? 0).toBe(0);

    // The control: the same record appended by the controller's own user is counted, so the refusals above are
    // what kept the forged ones out.
    await appendFile(file, `${forged.replace("\t500\t", "\t404\t")}\n`);
    await eventually(
      async () =>
        sample((await t.admin("/metrics")).body, "nginx_lb_route_requests_total", { ...labels, class: "4xx" }) === 1,
      10_000,
      "the controller user's record in /metrics",
    );
  });
});
