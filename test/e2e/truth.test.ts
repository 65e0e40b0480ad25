/**
 * Seeing the truth, at the real CLI (`node --import tsx src/cli/main.ts ...`) against a real `nginx-lb run` and nginx:
 * `render` prints what `run` serves (same endpoints mode, placeholders named), `diff` says what a routing file would
 * change without applying it (exit 0/1/2), and `--health-listen` serves /readyz and /healthz alone, without a token.
 */
import { spawn } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nginxTest } from "../../src/nginx/binary.js";
import { LUA_MODULES } from "../../src/render/dynamic.js";
import { ROUTES_LUA_MODULES } from "../../src/render/routes-dynamic.js";
import { eventually, startController, stopAllControllers, type Controller } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, freePorts, NGINX, tempDir } from "../helpers/nginx.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MAIN = join(ROOT, "src/cli/main.ts");
const TOKEN = "5f".repeat(16);
const PLACEHOLDER_TOKEN = "0".repeat(32);

/** Runs the CLI to its exit, without the caller's admin token in its environment unless `env` gives one. */
async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { NGINX_LB_ADMIN_TOKEN: _, NGINX_LB_ADMIN_URL: __, ...rest } = process.env;
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...rest, NGINX_LB_LOG_LEVEL: "info", ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  clearTimeout(timer);
  // No operator error may show a stack trace.
  expect(`${stdout}${stderr}`).not.toMatch(/^\s+at /m);
  return { code, stdout, stderr };
}

const lines = (s: string) => s.trimEnd().split("\n");
// The generation nginx.conf answers on its control server: a hash of the whole text, token included.
const sameGeneration = (conf: string) => conf.replace(/return 200 "[0-9a-f]{16}";/g, 'return 200 "<generation>";');
// Upstream names are hashes of domain, port and prefix.
const anyUpstream = (s: string) => s.replace(/nlb_[0-9a-f]{16}(_\d+)?/g, "nlb_<hash>");

let dir = "";
beforeAll(async () => {
  dir = await tempDir("nginx-lb-truth-");
});
afterAll(async () => {
  await stopAllControllers();
  await cleanupNginx();
});

const route = (app: string, more: Record<string, unknown> = {}) => ({ app, service: "api", port: 8000, ...more });

describe("render", () => {
  let services = "";
  let backends = "";
  beforeAll(async () => {
    services = join(dir, "render-services.json");
    backends = join(dir, "render-backends.json");
    const [port = 0] = await freePorts(1);
    await writeFile(
      services,
      JSON.stringify({ servers: [{ domain_name: "a.test", frontend_port: port, routes: { "/": route("web") } }] }),
    );
    await writeFile(backends, JSON.stringify({ "web-api": { "127.0.0.2": { weight: 5 } } }));
  });

  it("by default prints what run serves here (dynamic: nginx loads the Lua module), placeholders named", async () => {
    const stateDir = join(dir, "render-state");
    const lb = await startController({ services, stateDir, args: ["--backends", backends] });
    await lb.waitFor(/nginx started|config applied/);
    const served = await readFile(join(stateDir, "nginx.conf"), "utf8");
    const state = JSON.parse(await readFile(join(stateDir, "control.json"), "utf8")) as {
      controlPort: number;
      pushToken: string;
    };
    expect(await lb.stop()).toBe(0);

    // The flags startController gives run, and the control port run chose (not a secret); the token stays unknown.
    const r = await cli([
      ...["render", "--services", services, "--backends", backends, "--dir", stateDir],
      ...["--listen-host", "127.0.0.1", "--worker-processes", "1", "--control-port", String(state.controlPort)],
    ]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    const [first, routes, second, ...conf] = lines(r.stdout);
    expect(first).toBe(
      "# nginx-lb render: endpoints mode dynamic (what nginx-lb run chooses here: nginx loads the Lua module); --endpoints-mode to choose.",
    );
    expect(routes).toBe(
      "# nginx-lb render: routes mode dynamic (what nginx-lb run chooses with dynamic endpoints); --routes-mode to choose.",
    );
    expect(second).toBe(
      `# Placeholder: push token ${PLACEHOLDER_TOKEN} stands in for what nginx-lb run keeps in its state dir (render never reads the secret); anyone on this machine could push endpoints with this token: do not serve this file as it is.`,
    );
    expect(served).toContain("balancer_by_lua_block");
    // Routes pushed: one server per port, no site's name in nginx.conf.
    expect(served).not.toContain("a.test");
    expect(r.stdout).not.toContain(state.pushToken);
    expect(sameGeneration(`${conf.join("\n")}\n`)).toBe(
      sameGeneration(served.replaceAll(state.pushToken, PLACEHOLDER_TOKEN)),
    );
  });

  it("--endpoints-mode reload: the endpoints in nginx.conf, no Lua, a placeholder control port", async () => {
    const r = await cli(["render", "--services", services, "--backends", backends, "--endpoints-mode", "reload"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(lines(r.stdout).slice(0, 3)).toEqual([
      "# nginx-lb render: endpoints mode reload (as asked); --endpoints-mode to choose.",
      "# nginx-lb render: routes mode reload (what nginx-lb run chooses here: --endpoints-mode reload: pushed routes need dynamic endpoints); --routes-mode to choose.",
      "# Placeholder: control port 1 stands in for what nginx-lb run keeps in its state dir.",
    ]);
    expect(r.stdout).toMatch(/^\s+server 127\.0\.0\.2:8000 .*weight=5/m);
    expect(r.stdout).not.toMatch(/lua/i);
  });

  it("--out in dynamic mode writes the Lua modules beside nginx.conf and passes the real nginx -t", async () => {
    const out = join(dir, "render-out");
    const r = await cli(["render", "--services", services, "--backends", backends, "--out", out]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^wrote .*\/nginx\.conf and \d+ files beside it \(generation [0-9a-f]{16}\)\n$/);
    // Routes pushed by default here: the router's modules beside the balancer's (and the certificates' module).
    for (const m of [...LUA_MODULES, ...ROUTES_LUA_MODULES]) await stat(join(out, "lua", `${m}.lua`));
    const conf = join(out, "nginx.conf");
    expect(await readFile(conf, "utf8")).toMatch(/^# nginx-lb render: endpoints mode dynamic /);
    expect(await nginxTest(NGINX, conf, out)).toMatchObject({ ok: true });
  });

  it("an nginx without the Lua module: reload with the reason, as run chooses; dynamic asked there: a warning", async () => {
    const auto = await cli(["render", "--services", services, "--nginx", "/bin/false"]);
    expect([auto.code, auto.stderr, lines(auto.stdout)[0]]).toEqual([
      0,
      "",
      "# nginx-lb render: endpoints mode reload (what nginx-lb run chooses here: nginx cannot load the Lua module (nginx -t failed)); --endpoints-mode to choose.",
    ]);
    const dynamic = await cli([
      "render",
      "--services",
      services,
      "--nginx",
      "/bin/false",
      "--endpoints-mode",
      "dynamic",
    ]);
    expect([dynamic.code, dynamic.stderr]).toEqual([
      0,
      "warning: render: nginx-lb run would refuse this mode here: --endpoints-mode dynamic needs nginx's Lua module (apt-get install libnginx-mod-http-lua lua-resty-core): nginx cannot load the Lua module (nginx -t failed); rendered anyway\n",
    ]);
    expect(lines(dynamic.stdout)[0]).toBe(
      "# nginx-lb render: endpoints mode dynamic (as asked; nginx here cannot load the Lua module); --endpoints-mode to choose.",
    );
  });

  it("a mode that does not exist, or a control port out of range: exit 2", async () => {
    const mode = await cli(["render", "--services", services, "--endpoints-mode", "fast"]);
    expect([mode.code, lines(mode.stderr)[0]]).toEqual([
      2,
      "error: option '--endpoints-mode <mode>' argument 'fast' is invalid. Allowed choices are dynamic, reload, auto.",
    ]);
    const port = await cli(["render", "--services", services, "--control-port", "70000"]);
    expect([port.code, port.stdout, port.stderr]).toEqual([
      2,
      "",
      'error: render: --control-port: must be a port 1-65535, got "70000"\n',
    ]);
  });
});

describe("diff and --health-listen against a running controller with an admin token", () => {
  let lb: Controller;
  let services = "";
  let tokenFile = "";
  let sitePort = 0;
  let otherPort = 0;
  let adminPort = 0;
  let healthPort = 0;
  let admin = "";
  const servers = (routes: Record<string, unknown>, more: unknown[] = []) => ({
    servers: [{ domain_name: "a.test", frontend_port: sitePort, routes }, ...more],
  });
  const running = { "/": route("web"), "/api": route("api"), "/old": route("old") };
  const file = async (name: string, content: unknown) => {
    const path = join(dir, name);
    await writeFile(path, typeof content === "string" ? content : JSON.stringify(content));
    return path;
  };
  const health = (path: string, method = "GET") => get(`http://127.0.0.1:${healthPort}${path}`, { method });

  beforeAll(async () => {
    [sitePort = 0, otherPort = 0, adminPort = 0, healthPort = 0] = await freePorts(4);
    admin = `127.0.0.1:${adminPort}`;
    services = await file("diff-services.json", servers(running));
    tokenFile = await file("admin-token", `${TOKEN}\n`);
    const backends = await file("diff-backends.json", { "web-api": { "127.0.0.2": { weight: 1 } } });
    lb = await startController({
      services,
      stateDir: join(dir, "diff-state"),
      args: [
        ...["--backends", backends, "--admin-listen", admin, "--admin-token-file", tokenFile],
        ...["--health-listen", `127.0.0.1:${healthPort}`],
      ],
    });
    await eventually(async () => (await health("/readyz")).status === 200, 20_000, "/readyz 200");
  });

  it("the running file itself: nothing would change, exit 0, nothing on stdout", async () => {
    expect(await cli(["diff", "--services", services, "--admin", admin, "--admin-token-file", tokenFile])).toEqual({
      code: 0,
      stdout: "",
      stderr: `${services}: no change against the controller at http://${admin}\n`,
    });
  });

  it("the token from NGINX_LB_ADMIN_TOKEN; --admin-token-file before it; none: the 401, exit 2", async () => {
    const viaEnv = await cli(["diff", "--services", services, "--admin", `http://${admin}`], {
      NGINX_LB_ADMIN_TOKEN: TOKEN,
    });
    expect(viaEnv.code).toBe(0);
    const wrong = await file("wrong-token", "0123456789abcdef0123");
    const fileFirst = await cli(["diff", "--services", services, "--admin", admin, "--admin-token-file", wrong], {
      NGINX_LB_ADMIN_TOKEN: TOKEN,
    });
    const none = await cli(["diff", "--services", services, "--admin", admin]);
    for (const r of [fileFirst, none])
      expect(r).toEqual({
        code: 2,
        stdout: "",
        stderr: `nginx-lb diff: http://${admin}/api/status answered 401: unauthorized: send Authorization: Bearer <admin token>\n`,
      });
  });

  it("a changed file: each server and route added, removed, changed on stdout, exit 1, nothing applied", async () => {
    const applied = lb.applies().length;
    const next = await file(
      "diff-next.json",
      servers(
        { "/": route("web", { port: 9000 }), "/api": route("api", { backend_path: "/v2" }), "/new": route("new") },
        [{ domain_name: "b.test", frontend_port: otherPort, routes: { "/": route("web") } }],
      ),
    );
    const r = await cli(["diff", "--services", next, "--admin", admin, "--admin-token-file", tokenFile]);
    expect(r.code).toBe(1);
    expect(lines(anyUpstream(r.stdout))).toEqual([
      `~ route a.test:${sitePort}/: backend web-api:8000 -> web-api:9000`,
      `~ route a.test:${sitePort}/api: backend path / -> /v2`,
      `+ route a.test:${sitePort}/new -> new-api:8000 (upstream nlb_<hash>)`,
      `- route a.test:${sitePort}/old -> old-api:8000 (upstream nlb_<hash>)`,
      `+ server b.test:${otherPort}`,
      `+ route b.test:${otherPort}/ -> web-api:8000 (upstream nlb_<hash>)`,
    ]);
    expect(r.stderr).toBe(
      `${next}: 1 server added, 2 routes added, 1 route removed, 2 routes changed against the controller at http://${admin}\n`,
    );
    // The upstream names are the controller's own: the unchanged route keeps its name.
    const status = (await get(`http://${admin}/api/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json<{
      servers: { routes: { prefix: string; upstream: string }[] }[];
    }>();
    const old = status.servers[0]?.routes.find((x) => x.prefix === "/old")?.upstream ?? "missing";
    expect(r.stdout).toContain(`- route a.test:${sitePort}/old -> old-api:8000 (upstream ${old})`);
    // Nothing was applied: the same routes in force, no new apply.
    expect(status.servers.map((s) => s.routes.map((x) => x.prefix))).toEqual([["/", "/api", "/old"]]);
    expect(lb.applies().length).toBe(applied);
    await expect(get(`http://127.0.0.1:${otherPort}/`, { host: "b.test" })).rejects.toThrow(/ECONNREFUSED/);
  });

  it("an invalid file: its errors with their JSON paths, exit 2 (nothing compared)", async () => {
    const bad = await file("diff-bad.json", servers({ "/": route("web", { port: "x" }) }));
    expect(await cli(["diff", "--services", bad, "--admin", admin, "--admin-token-file", tokenFile])).toEqual({
      code: 2,
      stdout: "",
      stderr:
        `error: ${bad}: servers[0].routes["/"].port: port must be an integer from 1 to 65535, got "x"\n` +
        `${bad}: 1 error; nothing was compared (the controller would refuse this file and keep its routes)\n`,
    });
  });

  it("a missing file, no --services, a bad --admin, an unreachable controller: one line each, exit 2", async () => {
    const missing = join(dir, "missing.json");
    expect(await cli(["diff", "--services", missing, "--admin", admin])).toEqual({
      code: 2,
      stdout: "",
      stderr: `error: ${missing}: does not exist: check the path\n`,
    });
    const noFile = await cli(["diff", "--admin", admin]);
    expect([noFile.code, lines(noFile.stderr)[0]]).toEqual([
      2,
      "error: required option '--services <file>' not specified",
    ]);
    expect(await cli(["diff", "--services", services, "--admin", "ftp://x"])).toEqual({
      code: 2,
      stdout: "",
      stderr: 'nginx-lb diff: --admin must be a URL or HOST:PORT (e.g. 127.0.0.1:9180), got "ftp://x"\n',
    });
    const closed = await freePort();
    expect(await cli(["diff", "--services", services, "--admin", `127.0.0.1:${closed}`])).toEqual({
      code: 2,
      stdout: "",
      stderr: `nginx-lb diff: cannot reach http://127.0.0.1:${closed}: connection refused (is nginx-lb run serving its admin server there? see --admin-listen)\n`,
    });
  });

  it("--health-listen answers /readyz and /healthz without the token, like the admin server, and nothing else", async () => {
    const ready = await health("/readyz");
    expect([ready.status, ready.body]).toEqual([
      200,
      expect.stringMatching(/^ready: nginx runs generation [0-9a-f]{16}\n$/),
    ]);
    const fromAdmin = await get(`http://${admin}/readyz`);
    expect([fromAdmin.status, fromAdmin.body]).toEqual([200, ready.body]);
    const live = await health("/healthz");
    expect([live.status, live.body]).toEqual([200, "ok\n"]);
    for (const path of ["/", "/api/status", "/metrics", "/api/events"]) {
      const r = await health(path);
      expect([path, r.status, r.body]).toEqual([path, 404, "only /readyz and /healthz are served here\n"]);
    }
    // The admin server still wants its token for the same paths.
    expect((await get(`http://${admin}/api/status`)).status).toBe(401);
    expect((await health("/readyz", "POST")).status).toBe(405);
  });
});

describe("--health-listen", () => {
  it("with the admin server off: /readyz is 503 with why while nginx cannot serve", async () => {
    const [healthPort = 0] = await freePorts(1);
    // nginx cannot bind the site's port: it never runs a confirmed config. The squatter takes a port the kernel
    // picks, so no other test's nginx can have taken it first.
    const squatter: Server = createServer();
    await new Promise<void>((r) => squatter.listen(0, "127.0.0.1", r));
    const address = squatter.address();
    const sitePort = typeof address === "object" && address ? address.port : 0;
    try {
      const services = join(dir, "down-services.json");
      await writeFile(
        services,
        JSON.stringify({
          servers: [{ domain_name: "a.test", frontend_port: sitePort, routes: { "/": route("web") } }],
        }),
      );
      const lb = await startController({
        services,
        stateDir: join(dir, "down-state"),
        args: ["--admin-listen", "off", "--health-listen", `127.0.0.1:${healthPort}`],
      });
      await lb.waitFor(/Address already in use|bind\(\)/);
      const r = await get(`http://127.0.0.1:${healthPort}/readyz`);
      expect(r.status).toBe(503);
      expect(r.body).toMatch(/^not ready: nginx is not running: .*Address already in use/);
      expect((await get(`http://127.0.0.1:${healthPort}/healthz`)).status).toBe(200);
      await lb.stop();
    } finally {
      await new Promise<void>((r) => squatter.close(() => r()));
    }
  });

  it("a malformed address: exit 1 naming the flag; a taken one: run refuses to start, exit 1", async () => {
    const services = join(dir, "health-services.json");
    await writeFile(services, '{"servers":[]}');
    const bad = await cli(["run", "--services", services, "--health-listen", "9181"]);
    expect([bad.code, bad.stdout, lines(bad.stderr)]).toEqual([
      1,
      "",
      [
        'error: nginx-lb run: --health-listen: must be HOST:PORT (e.g. 127.0.0.1:9180), got "9181"',
        "nginx-lb run: 1 error; nothing was rendered",
      ],
    ]);
    const taken = createServer();
    const port = await freePort();
    await new Promise<void>((r) => taken.listen(port, "127.0.0.1", r));
    try {
      const r = await cli(
        [
          "run",
          "--services",
          services,
          "--state-dir",
          join(dir, "taken-state"),
          "--health-listen",
          `127.0.0.1:${port}`,
        ],
        { NGINX_LB_ADMIN_LISTEN: "off" },
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`--health-listen 127.0.0.1:${port}: listen EADDRINUSE`);
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});
