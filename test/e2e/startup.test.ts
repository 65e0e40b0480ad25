/**
 * Start-up at the real CLI (`nginx-lb run`, `nginx-lb example`): what cannot heal by itself exits 1 at once with one
 * line naming the flag or file; what may heal (a held port) is retried for `--start-timeout`, then exits 1 naming the
 * port and its holder; a silent etcd is said at the timeout while the daemon keeps running. Never a stack trace.
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startController, stopAllControllers } from "../helpers/controller.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let dir = "";
beforeAll(async () => {
  dir = await tempDir("nginx-lb-startup-");
});
afterAll(async () => {
  await stopAllControllers();
  await cleanupNginx();
});

interface Ran {
  code: number | null;
  lines: string[];
  ms: number;
}

/** Runs the CLI to its exit (killed after 40 s); its output as lines; never a stack trace. */
async function run(args: string[]): Promise<Ran> {
  const started = Date.now();
  const c = cli(args);
  const timer = setTimeout(() => c.child.kill("SIGKILL"), 40_000);
  const code = await c.exited;
  clearTimeout(timer);
  const lines = c.output().trimEnd().split("\n");
  expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]);
  return { code, lines, ms: Date.now() - started };
}

/** The log messages (pino's `msg`, or the plain line) of a run. */
const messages = (r: Ran) =>
  r.lines.map((l) => {
    try {
      return (JSON.parse(l) as { msg: string }).msg;
    } catch {
      return l;
    }
  });

let n = 0;
/** A services.json with one server on `port`, an empty backends file and a fresh state dir. */
async function setup(port: number): Promise<{ services: string; backends: string; state: string }> {
  const d = join(dir, `case-${++n}`);
  await mkdir(d);
  const services = join(d, "services.json");
  await writeFile(services, JSON.stringify({ servers: [{ domain_name: "a.test", frontend_port: port, routes: {} }] }));
  const backends = join(d, "backends.json");
  await writeFile(backends, "{}");
  return { services, backends, state: join(d, "state") };
}

const runArgs = (s: { services: string; backends: string; state: string }, ...extra: string[]) => [
  "run",
  "--services",
  s.services,
  "--backends",
  s.backends,
  "--state-dir",
  s.state,
  "--admin-listen",
  "off",
  "--listen-host",
  "127.0.0.1",
  "--worker-processes",
  "1",
  ...extra,
];

async function listen(port: number): Promise<Server> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(port, "127.0.0.1", r));
  return srv;
}

describe("start-up problems that cannot heal: exit 1 at once, one line naming the flag", () => {
  it("a missing services file", async () => {
    const s = await setup(await freePort());
    const r = await run(runArgs({ ...s, services: join(dir, "nope.json") }));
    expect([r.code, r.lines]).toEqual([
      1,
      [`error: nginx-lb run: --services: ${join(dir, "nope.json")} does not exist: check the path`],
    ]);
  });

  it("a services file this user cannot read (as nobody)", async () => {
    const s = await setup(await freePort());
    await chmod(s.services, 0o600);
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(
        "setpriv",
        ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", process.execPath, "--import", "tsx"].concat(
          join(ROOT, "src/cli/main.ts"),
          runArgs({ ...s, state: join(dir, "nobody-state") }),
        ),
        { cwd: ROOT, timeout: 30_000, env: { ...process.env, HOME: "/tmp" } },
        (err, _out, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr }),
      ),
    );
    expect(r.stderr.trim().split("\n")).toEqual([
      `error: nginx-lb run: --services: ${s.services} cannot be read by this user (uid 65534): fix its owner or mode`,
    ]);
    expect(r.code).toBe(1);
  });

  it("a missing etcd CA, certificate or key file", async () => {
    const s = await setup(await freePort());
    const r = await run([
      ...runArgs(s),
      "--etcd-endpoints",
      "https://127.0.0.1:2379",
      "--etcd-cacert",
      "/nonexistent/ca.pem",
      "--etcd-key",
      "/nonexistent/key.pem",
    ]);
    expect([r.code, r.lines]).toEqual([
      1,
      [
        "error: nginx-lb run: --etcd-cacert: /nonexistent/ca.pem does not exist: check the path",
        "error: nginx-lb run: --etcd-key: /nonexistent/key.pem does not exist: check the path",
      ],
    ]);
  });

  it("a missing nginx binary", async () => {
    const s = await setup(await freePort());
    const r = await run([...runArgs(s), "--nginx", "/nope"]);
    expect([r.code, r.lines]).toEqual([
      1,
      ["error: nginx-lb run: --nginx: /nope is not an executable file: pass the path of nginx (e.g. /usr/sbin/nginx)"],
    ]);
  });

  it("an unusable state dir (a file)", async () => {
    const s = await setup(await freePort());
    await writeFile(join(dir, "a-file"), "");
    const r = await run(runArgs({ ...s, state: join(dir, "a-file") }));
    expect(r.code).toBe(1);
    expect(messages(r).filter((m) => m !== "nginx-lb could not start")).toEqual([]);
    expect(r.lines.join("\n")).toContain("choose another --state-dir");
  });

  it("a --start-timeout that is no duration: exit 1 naming the flag", async () => {
    const s = await setup(await freePort());
    const r = await run([...runArgs(s), "--start-timeout", "soon"]);
    expect(r.code).toBe(1);
    expect(r.lines[0]).toBe(
      'error: nginx-lb run: --start-timeout: "soon": give a duration such as 500ms, 30s, 2m or plain seconds',
    );
  });
});

describe("start-up problems that may heal: retried for --start-timeout", () => {
  it("a frontend port held by another process: exit 1 after the timeout, naming the port and its holder once", async () => {
    const port = await freePort();
    const holder = await listen(port);
    try {
      const s = await setup(port);
      // nginx itself retries a bind for about 2.5 s: 8 s leave room for a retry of ours even on a loaded machine (a
      // first attempt that fails only after the timeout gives up at once, with no line of its own before the last).
      const r = await run([...runArgs(s), "--start-timeout", "8s"]);
      expect(r.code).toBe(1);
      const why = `port ${port} (127.0.0.1:${port}): Address already in use, held by pid ${process.pid} (`;
      const fatal = r.lines.filter((l) => l.includes("nginx could not start within --start-timeout 8 s"));
      expect(fatal).toHaveLength(1);
      expect(fatal[0]).toContain(why);
      // nginx's five bind attempts and every retry: summarised in one error line before the final one.
      const msgs = messages(r);
      expect(
        msgs.filter((m) => m.startsWith("apply failed: nginx could not start, nothing is serving yet")),
      ).toHaveLength(1);
      expect(r.lines.filter((l) => l.includes("still could not bind"))).toEqual([]);
      expect(r.lines.join("\n").split("Address already in use")).toHaveLength(3);
      expect(msgs.filter((m) => /previous config keeps serving|restored the last good/.test(m))).toEqual([]);
      // Not before the timeout, and not long after it (one nginx attempt takes about 2.5 s of bind retries).
      expect(r.ms).toBeGreaterThan(8000);
      expect(r.ms).toBeLessThan(20_000);
    } finally {
      holder.close();
    }
  });

  it("a port a draining predecessor frees within the timeout: nginx starts, no exit", async () => {
    const port = await freePort();
    const holder = await listen(port);
    const s = await setup(port);
    try {
      const lb = await startController({
        services: s.services,
        stateDir: s.state,
        args: ["--backends", s.backends, "--start-timeout", "30s"],
      });
      // Freed once the first start has failed (nginx's own bind retries, then ours): the retry must take it.
      await lb.waitFor(/apply failed: nginx could not start, nothing is serving yet/, 20_000);
      holder.close();
      await lb.waitFor(/"nginx started"/, 30_000);
      expect(lb.find(/apply failed: nginx could not start, nothing is serving yet/)).toHaveLength(1);
      expect(await lb.stop()).toBe(0);
    } finally {
      holder.close();
    }
  });

  it("a port under 1024 as a user without CAP_NET_BIND_SERVICE: says so, exit 1 at the timeout", async () => {
    const s = await setup(80);
    await chmod(join(dir, `case-${n}`), 0o755);
    await chmod(s.services, 0o644);
    await chmod(s.backends, 0o644);
    await mkdir(s.state);
    await chown(s.state, 65534, 65534);
    await chmod(dir, 0o755);
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(
        "setpriv",
        ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all"].concat(
          process.execPath,
          ["--import", "tsx", join(ROOT, "src/cli/main.ts")],
          runArgs(s, "--start-timeout", "1s"),
        ),
        { cwd: ROOT, timeout: 30_000, env: { ...process.env, HOME: "/tmp", NGINX_LB_LOG_LEVEL: "info" } },
        (err, _out, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr }),
      ),
    );
    const fatal = r.stderr.split("\n").filter((l) => l.includes("nginx could not start within --start-timeout"));
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toContain("port 80 (127.0.0.1:80): Permission denied");
    expect(fatal[0]).toContain("CAP_NET_BIND_SERVICE");
    expect(r.code).toBe(1);
  });

  it("etcd not up: the daemon keeps running and says at the timeout that every route answers 503", async () => {
    const s = await setup(await freePort());
    const etcd = await freePort();
    const lb = await startController({
      services: s.services,
      stateDir: s.state,
      args: ["--etcd-endpoints", `http://127.0.0.1:${etcd}`, "--start-timeout", "1s"],
    });
    await lb.waitFor(/has not answered within --start-timeout \(1 s\) and no endpoints were ever known/);
    expect(lb.child.exitCode).toBeNull();
    expect(await lb.stop()).toBe(0);
  });
});

describe("operator errors at start: one line, exit 1, no stack trace", () => {
  it("an admin port in use names it and its holder", async () => {
    const port = await freePort();
    const holder = await listen(port);
    try {
      const s = await setup(await freePort());
      const r = await run([
        ...runArgs(s).filter((a) => a !== "off" && a !== "--admin-listen"),
        "--admin-listen",
        `127.0.0.1:${port}`,
      ]);
      expect(r.code).toBe(1);
      expect(messages(r)).toEqual([
        `refusing to start: the admin address 127.0.0.1:${port} is in use, held by pid ${process.pid} (node): stop that process (another nginx-lb?) or choose another --admin-listen / --health-listen (off disables the admin server)`,
      ]);
    } finally {
      holder.close();
    }
  });

  it("an unreachable admin server for status: one line, exit 2", async () => {
    const r = await run(["status", "--admin", `127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^nginx-lb status: cannot reach http:\/\/127\.0\.0\.1:\d+: connection refused/);
  });

  it("`nginx-lb example` started twice (in a network namespace of its own): the second names the port and exits 1", async () => {
    const script = [
      "ip link set lo up",
      `cd ${JSON.stringify(ROOT)}`,
      `${process.execPath} --import tsx src/cli/main.ts example > "$1" 2>&1 &`,
      "first=$!",
      'for i in $(seq 300); do grep -q "nginx-lb is running" "$1" && break; sleep 0.1; done',
      `${process.execPath} --import tsx src/cli/main.ts example 2>&1`,
      "code=$?",
      'kill -TERM "$first"; wait "$first"',
      'exit "$code"',
    ].join("\n");
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(
        "unshare",
        ["--net", "bash", "-c", script, "bash", join(dir, "first-example.log")],
        { timeout: 60_000, env: { ...process.env, NGINX_LB_LOG_LEVEL: "info" } },
        (err, out) => resolve({ code: err ? Number(err.code) : 0, out }),
      ),
    );
    expect(r.out.trim().split("\n")).toEqual([
      expect.stringMatching(
        /^nginx-lb example: port 8080 is in use, held by pid \d+ \(nginx\): stop it first \(another nginx-lb example\? Ctrl-C it\)$/,
      ),
    ]);
    expect(r.code).toBe(1);
  });
});
