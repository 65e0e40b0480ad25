/**
 * A local unprivileged user against a running `nginx-lb run` (the real CLI, real nginx): as `nobody`, it tries every
 * door another user of the machine has: every loopback port (the control server among them: an emptying push, with no
 * token and a guessed one), the traffic record file, the admin server's event-stream slots, the state dir and the
 * environment of nginx's processes. Every attempt must fail, and what nginx serves must stay what the registry says.
 */
import { readFile, readdir, readlink } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAdminLb, type AdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { stopAllControllers } from "../helpers/controller.js";
import { asNobody, asNobodyShell } from "../helpers/nobody.js";
import { cleanupNginx } from "../helpers/nginx.js";
import { sleep } from "../helpers/wait.js";

const SECRET = "local-attacker-test-etcd-password-0123456789";
let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await cleanupNginx();
});

/**
 * The loopback TCP ports in LISTEN state that these processes or their descendants hold (sockets matched by inode
 * through /proc/PID/fd). Not every loopback listener: other test files' echo backends run at the same time and answer
 * 200 to any request, which says nothing about this instance's doors.
 */
async function listenersOf(roots: readonly number[]): Promise<number[]> {
  const pids = new Set<number>();
  const visit = async (pid: number): Promise<void> => {
    if (pids.has(pid)) return;
    pids.add(pid);
    const children = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
    for (const c of children.trim().split(/\s+/).filter(Boolean)) await visit(Number(c));
  };
  for (const pid of roots) await visit(pid);
  const inodes = new Set<string>();
  for (const pid of pids)
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const socket = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ""));
      if (socket?.[1]) inodes.add(socket[1]);
    }
  const lines = (await readFile("/proc/net/tcp", "utf8")).split("\n").slice(1);
  const ports = lines
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[3] === "0A" && /^(0100007F|00000000):/.test(f[1] ?? "") && inodes.has(f[9] ?? ""))
    .map((f) => Number.parseInt((f[1] ?? "").split(":")[1] ?? "0", 16));
  return [...new Set(ports)].sort((a, b) => a - b);
}

/** The backends that answered over `n` requests through nginx. */
async function served(t: AdminLb, n = 20): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await t.site("/");
    seen.add(r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`);
  }
  return [...seen].sort();
}

/** The status of /api/events with a bearer token (the stream is closed once its headers arrive). */
function firstEventStatus(port: number, token: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(
      { host: "127.0.0.1", port, path: "/api/events", agent: false, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        resolve(res.statusCode ?? 0);
        req.destroy();
      },
    );
    req.setTimeout(5000, () => req.destroy());
    req.on("error", () => resolve(0));
  });
}

/** Pids of the nginx master named in the pid file and of its workers. */
async function nginxPids(stateDir: string): Promise<number[]> {
  const master = Number((await readFile(join(stateDir, "nginx.pid"), "utf8")).trim());
  const children = await readFile(`/proc/${master}/task/${master}/children`, "utf8");
  return [master, ...children.trim().split(/\s+/).filter(Boolean).map(Number)];
}

describe.each(["dynamic", "reload"] as const)(
  "a local attacker (nobody) against nginx-lb run (%s endpoints)",
  (mode) => {
    it("cannot push endpoints, forge traffic, starve the operator's event stream, read the state dir or secrets", async () => {
      const t = await startAdminLb({
        pool,
        endpoints: { "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } },
        args: ["--endpoints-mode", mode, "--worker-processes", "2"],
        // The default admin configuration (loopback, no token configured); a secret in the controller's environment.
        env: { NGINX_LB_ETCD_PASSWORD: SECRET },
      });
      const stateDir = join(t.dir, "state");
      const want = ["127.0.0.2", "127.0.0.3"];
      expect(await served(t)).toEqual(want);

      // 1. Every loopback port of this instance (controller, nginx): an emptying push in the line format, without a token and with a guessed one.
      const emptying = "nginx-lb-sets version=999999\nend upstreams=0\n";
      const ports = await listenersOf([t.lb.child.pid ?? 0, ...(await nginxPids(stateDir))]);
      // The site, nginx's control server and the admin server at least.
      expect(ports).toEqual(expect.arrayContaining([t.sitePort, t.adminPort]));
      expect(ports.length).toBeGreaterThan(2);
      const answers: string[] = [];
      for (const port of ports)
        for (const token of ["", "0123456789abcdef0123456789abcdef"]) {
          const r = await asNobody(
            "curl",
            ...["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", "-X", "POST", "--data-binary", emptying],
            ...(token ? ["-H", `X-Nginx-Lb-Token: ${token}`] : []),
            `http://127.0.0.1:${port}/nginx-lb/endpoints`,
          );
          answers.push(r.stdout);
        }
      expect(answers.filter((code) => code === "200")).toEqual([]);
      expect(await served(t)).toEqual(want);

      // 2. The traffic record file: nobody cannot append a forged record (nor create one in the state dir).
      const forged = await asNobodyShell('printf "%s\\n" forged >> "$1"', join(stateDir, "logs/traffic.tsv"));
      expect(forged.code).not.toBe(0);

      // 3. The admin server: nobody holds as many event streams as it can get, from many loopback source addresses;
      // the operator (the local token in the 0600 state dir) still gets one meanwhile.
      const hog = asNobody(
        "node",
        "-e",
        `const http = require("node:http");
       let open = 0;
       for (let i = 0; i < 60; i++) {
         const req = http.get({ host: "127.0.0.1", port: ${t.adminPort}, path: "/api/events", agent: false,
           localAddress: "127.0.0." + (10 + (i % 20)) });
         req.on("response", (res) => { if (res.statusCode === 200) open++; res.resume(); });
         req.on("error", () => {});
       }
       setTimeout(() => { console.log(open); process.exit(0); }, 4000);`,
      );
      await sleep(2000);
      const token = (await readFile(join(stateDir, "admin-token"), "utf8")).trim();
      const operator = await firstEventStatus(t.adminPort, token);
      const hogged = Number((await hog).stdout.trim());
      expect(hogged).toBeGreaterThan(0);
      expect(hogged).toBeLessThan(60);
      expect(operator).toBe(200);

      // 4. The state dir: not listable, its files unreadable.
      for (const args of [
        ["ls", stateDir],
        ["cat", join(stateDir, "nginx.conf")],
        ["cat", join(stateDir, "state.json")],
      ])
        expect((await asNobody(args[0] ?? "", ...args.slice(1))).code, args.join(" ")).not.toBe(0);

      // 5. nginx's processes: their environment holds no secret, whoever reads it.
      for (const pid of await nginxPids(stateDir)) {
        const env = await asNobody("cat", `/proc/${pid}/environ`);
        expect(env.stdout).not.toContain(SECRET);
        expect(env.stdout).not.toContain("NGINX_LB_");
      }

      // After all of it: nginx serves the registry, the figures count only real requests.
      expect(await served(t)).toEqual(want);
      expect(await readdir(stateDir)).toContain("nginx.conf");
      await t.lb.stop();
    });
  },
);
