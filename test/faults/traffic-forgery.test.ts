import { execFile } from "node:child_process";
import { appendFile, chmod, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sample, startAdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx } from "../helpers/nginx.js";

/**
 * A local unprivileged user (nobody, the user nginx's workers run as) tries to forge per-route traffic figures of a
 * real `nginx-lb run`: through the record file, through a worker's open descriptor of it, and through the loopback
 * UDP port that used to carry the records. Nothing it writes may reach /metrics.
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

/** Runs a shell command as nobody:nogroup without supplementary groups. */
function asNobody(script: string, ...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      "setpriv",
      ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "bash", "-c", script, "bash", ...args],
      { cwd: "/", timeout: 10_000 },
      (err, _stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stderr }),
    ),
  );
}

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

describe.each(["dynamic", "reload"])("traffic figures forged by another local user (%s endpoints)", (mode) => {
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
    const file = join(stateDir, "logs/traffic.jsonl");
    const conf = await readFile(join(stateDir, "nginx.conf"), "utf8");
    expect(conf).toContain(`access_log ${file} nlb;`);
    expect(conf).not.toContain("syslog");

    const view = (await t.admin("/api/status")).json<{
      servers: { routes: { upstream: string; label: string }[] }[];
    }>();
    const route = view.servers[0]?.routes[0];
    expect(route).toBeDefined();
    const labels = { route: route?.label ?? "", upstream: route?.upstream ?? "" };
    const forged = `{"r":"${labels.upstream}","s":"500","t":"0.001","u":"0.001","b":"1"}`;

    // 1. The file itself.
    const direct = await asNobody('for i in $(seq 50); do printf "%s\\n" "$1" >> "$2" || exit 1; done', forged, file);
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
      const viaProc = await asNobody('printf "%s\\n" "$1" >> "$2"', forged, fd);
      expect(viaProc.code).not.toBe(0);
      expect(viaProc.stderr).toMatch(/Permission denied/);
    }

    // 3. The loopback UDP port that used to carry the records (the admin port number): nothing listens there now.
    expect(await udpBound(t.adminPort)).toBe(0);
    const udp = await asNobody(
      'for i in $(seq 50); do printf "%s" "$1" > "/dev/udp/127.0.0.1/$2"; done; exit 0',
      forged,
      String(t.adminPort),
    );
    expect(udp.code).toBe(0);

    // The local operator token (the reserved event-stream slots) is not readable either.
    expect((await asNobody('cat "$1"', join(stateDir, "admin-token"))).code).not.toBe(0);

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
    await appendFile(file, `${forged.replace('"500"', '"404"')}\n`);
    await eventually(
      async () =>
        sample((await t.admin("/metrics")).body, "nginx_lb_route_requests_total", { ...labels, class: "4xx" }) === 1,
      10_000,
      "the controller user's record in /metrics",
    );
  });
});
