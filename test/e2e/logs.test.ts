/**
 * What an operator reads from a real `nginx-lb run`: on a terminal (the CLI under script(1), a real pty) one line per
 * record, an apply saying what changed and how long it took; piped, JSON lines; and `--access-log`, the JSON lines
 * nginx writes per request.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { lstat, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, sleep, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get, rawGet } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MAIN = join(ROOT, "src/cli/main.ts");

let pool: BackendPool;
const terminals: { child: ChildProcess; pid: () => number | null; exited: Promise<number | null> }[] = [];
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
});
afterAll(async () => {
  // The CLI survives its pty closing (SIGHUP means reload to it): stop it, and the nginx it runs, by its pid.
  for (const t of terminals) {
    if (t.child.exitCode !== null || t.child.signalCode !== null) continue;
    const pid = t.pid();
    if (pid !== null) process.kill(pid, "SIGTERM");
    if ((await Promise.race([t.exited, sleep(15_000).then(() => "timeout")])) === "timeout") t.child.kill("SIGKILL");
  }
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

const one = (ip: string) => ({ [ip]: { weight: 1 } });

/** A services.json with one site (a.test) routing `/` to web-api, and a backends file with `endpoints`. */
async function site(endpoints: Record<string, { weight: number }>) {
  const dir = await tempDir("nginx-lb-logs-");
  const port = await freePort();
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(services, [
    { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
  ]);
  await writeFile(backends, JSON.stringify({ "web-api": endpoints }));
  const args = ["--services", services, "--state-dir", join(dir, "state"), "--listen-host", "127.0.0.1"];
  return { dir, port, services, backends, args: [...args, "--worker-processes", "1", "--backends", backends] };
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** `nginx-lb ARGS` with stderr on a terminal: script(1) runs it in a pty; the output is what the operator sees. */
function onTerminal(args: string[], env: Record<string, string>) {
  const command = [process.execPath, "--import", "tsx", MAIN, ...args].map(quote).join(" ");
  const child = spawn("script", ["-qefc", command, "/dev/null"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let raw = "";
  child.stdout?.on("data", (d: Buffer) => (raw += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (raw += d.toString()));
  // eslint-disable-next-line no-control-regex
  const text = () => raw.replace(/\x1b\[[0-9;]*m/g, "").replace(/\r/g, "");
  const lines = () =>
    text()
      .split("\n")
      .filter((l) => l !== "");
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const waitLine = async (re: RegExp, what: string) => {
    const found = await eventually(async () => lines().some((l) => re.test(l)), 20_000, what).catch(() => false);
    if (found === false) throw new Error(`no line matching ${re} (${what}); output:\n${text().slice(-3000)}`);
    return lines().find((l) => re.test(l)) ?? "";
  };
  const pid = () => {
    const m = /INFO: nginx-lb is running pid=(\d+)/.exec(text());
    return m ? Number(m[1]) : null;
  };
  terminals.push({ child, pid, exited });
  return { child, raw: () => raw, lines, exited, waitLine, pid };
}

describe("nginx-lb run on a terminal", () => {
  it("says each apply in one line (what changed, how long), starts nginx in one line, says SIGUSR2 changed nothing, and ends with a stopped line", async () => {
    const s = await site(one("127.0.0.2"));
    const t = onTerminal(["run", ...s.args], { NGINX_LB_LOG_LEVEL: "info", NGINX_LB_ADMIN_LISTEN: "off" });
    await t.waitLine(/INFO: nginx-lb is running pid=\d+/, "the running line");
    const pid = t.pid() ?? 0;
    const route = `a\\.test:${s.port}/`;
    await t.waitLine(
      new RegExp(
        `INFO: nginx started in \\d+ ms: \\+1 route \\(${route}\\), \\+1 endpoint \\(${route} 127\\.0\\.0\\.2:${pool.port} w1\\) \\(.+\\)$`,
      ),
      "the start line",
    );
    expect(t.raw()).toContain("\x1b["); // a terminal gets colour; NO_COLOR is not set here

    await writeFile(s.backends, JSON.stringify({ "web-api": { ...one("127.0.0.2"), ...one("127.0.0.3") } }));
    await t.waitLine(
      new RegExp(
        `INFO: (config applied by reload|endpoints pushed) in \\d+ ms: \\+1 endpoint \\(${route} 127\\.0\\.0\\.3:${pool.port} w1\\) \\(registry: .+\\)$`,
      ),
      "the endpoint apply line",
    );

    process.kill(pid, "SIGUSR2");
    await t.waitLine(/INFO: services\.json unchanged: nothing to apply file=\S+ reason=SIGUSR2$/, "the unchanged line");

    process.kill(pid, "SIGTERM");
    expect(await t.exited).toBe(0);
    const lines = t.lines();
    expect(lines.at(-1)).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: nginx-lb stopped signal=SIGTERM ms=\d+$/);
    // One line per record: every line starts with a time and a level, and none is JSON.
    for (const l of lines) expect(l).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR): /);
    expect(lines.filter((l) => /started nginx|nginx started/.test(l))).toHaveLength(1);
  });
});

describe("nginx-lb run piped, with --access-log", () => {
  it("logs JSON lines, and nginx writes one JSON access line per request with every field", async () => {
    const s = await site(one("127.0.0.2"));
    const accessLog = join(s.dir, "access.jsonl");
    const lb = await startController({
      stateDir: join(s.dir, "state"),
      services: s.services,
      args: ["--backends", s.backends, "--access-log", accessLog],
      env: { NGINX_LB_LOG_LEVEL: "info" },
    });
    await lb.waitFor(/nginx started/);
    expect((await lstat(accessLog)).mode & 0o777).toBe(0o600);

    const url = `http://127.0.0.1:${s.port}`;
    const uri = `/a"b\\c?q=<x>&y=1`;
    // Sent raw: a URL parser would escape the quote and the backslash that nginx must escape in the log.
    expect((await rawGet(s.port, uri, "a.test")).toString()).toMatch(/^HTTP\/1\.1 200 /);
    expect((await get(`${url}/`, { host: "unknown.test" })).status).toBe(404);
    await eventually(async () => (await readFile(accessLog, "utf8")).split("\n").length > 2, 10_000, "2 access lines");
    const records = (await readFile(accessLog, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records).toHaveLength(2);
    const [routed, unrouted] = records;
    expect(Object.keys(routed ?? {}).sort()).toEqual(
      [
        "time",
        "remote_addr",
        "host",
        "method",
        "uri",
        "status",
        "bytes",
        "request_time",
        "upstream_addr",
        "upstream_status",
        "upstream_response_time",
        "route",
      ].sort(),
    );
    expect(routed).toMatchObject({
      remote_addr: "127.0.0.1",
      host: "a.test",
      method: "GET",
      uri,
      status: "200",
      upstream_addr: `127.0.0.2:${pool.port}`,
      upstream_status: "200",
    });
    expect(routed?.["route"]).toMatch(/^nlb_[0-9a-f]{16}$/);
    expect(routed?.["bytes"]).toBeGreaterThan(0);
    expect(typeof routed?.["request_time"]).toBe("number");
    expect(routed?.["upstream_response_time"]).toMatch(/^\d+\.\d{3}$/);
    expect(Date.parse(String(routed?.["time"]))).toBeGreaterThan(Date.now() - 60_000);
    expect(unrouted).toMatchObject({ host: "unknown.test", status: "404", route: "", upstream_addr: "" });

    // Piped: JSON lines, one nginx start at info, SIGUSR2 on the same file said, a stopped line last.
    lb.signal("SIGUSR2");
    await lb.waitFor(/services\.json unchanged: nothing to apply/);
    expect(await lb.stop()).toBe(0);
    expect(lb.lines.every((l) => l.level >= 30 && typeof l["time"] === "string")).toBe(true);
    expect(lb.lines.filter((l) => /started nginx|nginx started/.test(l.msg))).toHaveLength(1);
    expect(lb.lines.at(-1)?.msg).toBe("nginx-lb stopped");
  });

  it("refuses an access log that is a symbolic link or a path nginx cannot take, naming the flag", async () => {
    const s = await site(one("127.0.0.2"));
    const link = join(s.dir, "access.log");
    await symlink("/etc/shadow", link);
    const linked = cli(["run", ...s.args, "--admin-listen", "off", "--access-log", link]);
    expect(await linked.exited).toBe(1);
    expect(linked.output()).toContain(`--access-log ${link}: is a symbolic link`);
    const spaced = cli(["run", ...s.args, "--admin-listen", "off", "--access-log", join(s.dir, "a b.log")]);
    expect(await spaced.exited).toBe(1);
    expect(spaced.output()).toContain("--access-log");
  });
});
