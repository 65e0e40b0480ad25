/**
 * nginx-lb without root, as the systemd unit and the image run it, checked without systemd or Docker: the command
 * each starts, under `setpriv` with the user and capabilities each grants, serves a port below 1024 through nginx;
 * the controller, the nginx master and its workers all run as that user, holding CAP_NET_BIND_SERVICE at most.
 *
 * - unit: the unit's ExecStart, its Environment, its AmbientCapabilities/CapabilityBoundingSet and NoNewPrivileges,
 *   as the unit's user (its uid from deploy/nginx-lb.sysusers; the name does not exist on a test machine);
 * - image: the Dockerfile's ENTRYPOINT as pid 1 with its ENV, as its USER, with a capability bounding set of
 *   NET_BIND_SERVICE only (compose: cap_drop ALL, cap_add NET_BIND_SERVICE) and nothing else; nginx is a copy of
 *   Debian's with the file capability the Dockerfile sets (and, to show it is what lets nginx bind, without it).
 */
import { execFileSync, spawn } from "node:child_process";
import { copyFile, chown, chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { Controller, eventually, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, NGINX, tempDir } from "../helpers/nginx.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const CAP_NET_BIND_SERVICE = 1n << 10n;

const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
const finalStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
const unit = readFileSync(join(ROOT, "deploy/nginx-lb.service"), "utf8");
const sysusers = readFileSync(join(ROOT, "deploy/nginx-lb.sysusers"), "utf8");

/** The unit's `Key=value` settings; a key set twice keeps every value. */
function unitSettings(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of unit.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1] ?? "", [...(out.get(m[1] ?? "") ?? []), m[2] ?? ""]);
  }
  return out;
}
const setting = (key: string) => unitSettings().get(key)?.at(-1) ?? "";

/** The image's user as uid and gid (USER must be numeric), and its ENV. */
function imageUser(): { uid: number; gid: number } {
  const m = /^USER (\d+):(\d+)\s*$/m.exec(finalStage);
  expect(m, "a numeric USER uid:gid in the final stage").not.toBeNull();
  return { uid: Number(m?.[1]), gid: Number(m?.[2]) };
}
function imageEnv(): Record<string, string> {
  const lines = finalStage.split("\n").filter((l) => l.startsWith("ENV "));
  return Object.fromEntries(lines.flatMap((l) => [...l.matchAll(/([A-Za-z_]+)=(\S+)/g)]).map((m) => [m[1], m[2]]));
}

/** Capability names of a unit setting (`CAP_NET_BIND_SERVICE ...`) as setpriv spells them. */
const capNames = (value: string) =>
  value
    .split(/\s+/)
    .filter(Boolean)
    .map((c) => c.replace(/^CAP_/, "").toLowerCase());

/** A loopback port below 1024 that is free now (tests run as root, so binding it here is allowed). */
async function lowPort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = 600 + Math.floor(Math.random() * 400);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free loopback port below 1024");
}

interface ProcInfo {
  uid: number;
  capEff: bigint;
  capBnd: bigint;
}
async function proc(pid: number): Promise<ProcInfo> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1] ?? "";
  return {
    uid: Number(field("Uid").split(/\s+/)[1]),
    capEff: BigInt(`0x${field("CapEff")}`),
    capBnd: BigInt(`0x${field("CapBnd")}`),
  };
}
const children = async (pid: number) =>
  (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => ""))
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);

let pool: BackendPool;
beforeAll(async () => {
  if (!existsSync(join(ROOT, "dist/cli/main.js"))) execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT });
  pool = await startBackends(["127.0.0.7"]);
});
afterAll(async () => {
  await pool?.close();
  await cleanupNginx();
});

/** A services file with one site on `port`, a state dir path, all owned by `uid:gid` under a dir it can enter. */
async function workspace(uid: number, gid: number, port: number) {
  const dir = await tempDir("nginx-lb-unprivileged-");
  await chmod(dir, 0o755);
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(services, [
    { domain_name: "low.test", frontend_port: port, routes: { "/": { app: "low", service: "web", port: pool.port } } },
  ]);
  await writeFile(backends, JSON.stringify({ "low-web": { "127.0.0.7": { weight: 1 } } }));
  await mkdir(join(dir, "state"), { mode: 0o700 });
  for (const f of [dir, services, backends, join(dir, "state")]) await chown(f, uid, gid);
  return { dir, services, backends, state: join(dir, "state") };
}

/** Starts `cmd`, waits until the daemon runs and serves the site, and checks who runs it with which capabilities. */
async function serveAsUser(o: {
  cmd: string[];
  env: Record<string, string>;
  wrapped: boolean;
  uid: number;
  port: number;
  controllerCaps: bigint;
}): Promise<Controller> {
  const [bin = "", ...args] = o.cmd;
  const child = spawn(bin, args, { cwd: "/", env: o.env, stdio: ["ignore", "ignore", "pipe"] });
  const lb = new Controller(child, o.wrapped);
  try {
    await lb.waitFor(/nginx-lb is running/, 30_000);
    // As pid 1 (the image), the native reaper is loaded.
    if (o.wrapped) expect(lb.find(/running as pid 1: reaping orphaned processes/)).toHaveLength(1);
    const r = await eventually(
      async () => {
        const reply = await get(`http://127.0.0.1:${o.port}/x`, { host: "low.test", timeoutMs: 2000 });
        return reply.status === 200 ? reply : null;
      },
      20_000,
      `the site on port ${o.port}`,
    );
    expect(r.json<Echo>().backend).toBe("127.0.0.7");
    const controller = o.wrapped ? ((await children(child.pid ?? 0))[0] ?? 0) : (child.pid ?? 0);
    // Host pids: the log's are the pid namespace's when wrapped.
    const masters = [];
    for (const pid of await children(controller))
      if ((await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).startsWith("nginx: master"))
        masters.push(pid);
    expect(masters).toHaveLength(1);
    const master = masters[0] ?? 0;
    const workers = await children(master);
    expect(workers.length).toBeGreaterThan(0);
    const c = await proc(controller);
    expect(c.uid).toBe(o.uid);
    expect(c.capEff).toBe(o.controllerCaps);
    for (const pid of [master, ...workers]) {
      const p = await proc(pid);
      expect(p.uid, `nginx pid ${pid}`).toBe(o.uid);
      expect(p.capEff, `nginx pid ${pid}`).toBe(CAP_NET_BIND_SERVICE);
      expect(p.capBnd, `nginx pid ${pid}`).toBe(CAP_NET_BIND_SERVICE);
    }
  } finally {
    const code = await lb.stop();
    if (lb.lines.some((l) => l.level >= 50)) console.error(lb.lines.slice(-20));
    expect(code).toBe(0);
  }
  return lb;
}

describe("systemd unit", () => {
  test("runs as a dedicated user with CAP_NET_BIND_SERVICE only, hardened (systemd-analyze security: OK)", () => {
    const user = setting("User");
    expect(user).toBe("nginx-lb");
    expect(sysusers).toMatch(new RegExp(`^u ${user} (\\d+) `, "m"));
    expect(setting("AmbientCapabilities")).toBe("CAP_NET_BIND_SERVICE");
    expect(setting("CapabilityBoundingSet")).toBe("CAP_NET_BIND_SERVICE");
    const stateDir = /^Environment=NGINX_LB_STATE_DIR=(\S+)$/m.exec(unit)?.[1];
    expect(stateDir).toBe(`/var/lib/${setting("StateDirectory")}`);
    expect(setting("ReadWritePaths").split(/\s+/)).toContain(stateDir);
    for (const [key, value] of Object.entries({
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      PrivateDevices: "yes",
      RestrictSUIDSGID: "yes",
      KillMode: "process",
    }))
      expect(setting(key), key).toBe(value);
    expect(setting("RestrictAddressFamilies").split(/\s+/).sort()).toEqual([
      "AF_INET",
      "AF_INET6",
      "AF_NETLINK",
      "AF_UNIX",
    ]);
    // The same uid as the image, so a state dir moved between the two keeps its owner.
    expect(Number(/^u \S+ (\d+) /m.exec(sysusers)?.[1])).toBe(imageUser().uid);
    // Exposure is scored 0..100 here (printed as 0.0..10.0); 20 is systemd's "OK" band.
    execFileSync(
      "systemd-analyze",
      ["security", "--offline=true", "--threshold=20", join(ROOT, "deploy/nginx-lb.service")],
      {
        stdio: "pipe",
      },
    );
  });

  test("its ExecStart, as its user with its capabilities, serves a port below 1024", async () => {
    const { uid, gid } = imageUser();
    const port = await lowPort();
    const ws = await workspace(uid, gid, port);
    const caps = capNames(setting("AmbientCapabilities"));
    expect(caps).toEqual(["net_bind_service"]);
    const bounding = capNames(setting("CapabilityBoundingSet"));
    const exec = setting("ExecStart")
      .split(/\s+/)
      .map((w) => w.replace(/^\/opt\/nginx-lb\//, ROOT));
    const env = Object.fromEntries(
      (unitSettings().get("Environment") ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]),
    );
    expect(env["NGINX_LB_STATE_DIR"]).toBe("/var/lib/nginx-lb");
    await serveAsUser({
      cmd: [
        "setpriv",
        ...["--reuid", String(uid), "--regid", String(gid), "--clear-groups"],
        ...["--inh-caps", caps.map((c) => `+${c}`).join(","), "--ambient-caps", caps.map((c) => `+${c}`).join(",")],
        ...["--bounding-set", ["-all", ...bounding.map((c) => `+${c}`)].join(",")],
        ...(setting("NoNewPrivileges") === "yes" ? ["--no-new-privs"] : []),
        ...exec,
      ],
      env: {
        PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        ...env,
        // /etc/default/nginx-lb's part: paths a test may write, loopback, the test's backends file, no admin port.
        NGINX_LB_SERVICES: ws.services,
        NGINX_LB_STATE_DIR: ws.state,
        NGINX_LB_BACKENDS: ws.backends,
        NGINX_LB_LISTEN_HOST: "127.0.0.1",
        NGINX_LB_WORKER_PROCESSES: "1",
        NGINX_LB_ADMIN_LISTEN: "off",
      },
      wrapped: false,
      uid,
      port,
      controllerCaps: CAP_NET_BIND_SERVICE,
    });
    const st = await stat(ws.state);
    expect([st.uid, st.mode & 0o777]).toEqual([uid, 0o700]);
  });
});

describe("container image", () => {
  /** The image's command as pid 1 of a new pid namespace, as its USER with `bounding` as the only capabilities. */
  async function entrypoint(nginx: string, port: number, ws: Awaited<ReturnType<typeof workspace>>) {
    const { uid, gid } = imageUser();
    const entry = JSON.parse(/^ENTRYPOINT (\[.*\])\s*$/m.exec(finalStage)?.[1] ?? "[]") as string[];
    expect(entry.slice(0, 2)).toEqual(["/usr/local/bin/node", "/opt/nginx-lb/bin/nginx-lb.js"]);
    const cmd = [process.execPath, join(ROOT, "bin/nginx-lb.js"), ...entry.slice(2)];
    const env = {
      PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      ...imageEnv(),
      NGINX_LB_SERVICES: ws.services,
      NGINX_LB_STATE_DIR: ws.state,
      NGINX_LB_BACKENDS: ws.backends,
      NGINX_LB_LISTEN_HOST: "127.0.0.1",
      NGINX_LB_WORKER_PROCESSES: "1",
      NGINX_LB_ADMIN_LISTEN: "off",
      NGINX_LB_NGINX: nginx,
    };
    const setpriv = [
      ...["setpriv", "--reuid", String(uid), "--regid", String(gid), "--clear-groups"],
      ...["--inh-caps", "-all", "--bounding-set", "-all,+net_bind_service"],
    ];
    return { uid, env, cmd: ["unshare", "--pid", "--fork", "--mount-proc", ...setpriv, ...cmd], port };
  }

  test("its entrypoint as its USER serves a port below 1024 through nginx's file capability, and only that", async () => {
    const setcap = /setcap (\S+) \/usr\/sbin\/nginx/.exec(finalStage);
    expect(setcap?.[1]).toBe("cap_net_bind_service=+ep");
    const { uid, gid } = imageUser();
    const port = await lowPort();
    const ws = await workspace(uid, gid, port);
    // After the chown above: changing a file's owner drops its capabilities.
    const nginx = join(ws.dir, "nginx");
    await copyFile(NGINX, nginx);
    await chmod(nginx, 0o755);
    execFileSync("setcap", [setcap?.[1] ?? "", nginx]);
    const run = await entrypoint(nginx, port, ws);
    await serveAsUser({ ...run, wrapped: true, controllerCaps: 0n });
  });

  test("without the file capability, nginx may not bind the port (what the setcap is for)", async () => {
    const { uid, gid } = imageUser();
    const port = await lowPort();
    const ws = await workspace(uid, gid, port);
    const run = await entrypoint(NGINX, port, ws);
    const [bin = "", ...args] = run.cmd;
    const lb = new Controller(spawn(bin, args, { cwd: "/", env: run.env, stdio: ["ignore", "ignore", "pipe"] }), true);
    try {
      // nginx's own words, or the controller's one-line summary of them (port, address, errno words, what to do).
      await lb.waitFor(
        new RegExp(
          `bind\\(\\) to 127\\.0\\.0\\.1:${port} failed \\(13: Permission denied\\)|` +
            `port ${port} \\(127\\.0\\.0\\.1:${port}\\): Permission denied`,
        ),
        30_000,
      );
    } finally {
      await lb.stop();
    }
  });
});
