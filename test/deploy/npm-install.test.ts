/**
 * The package as npm ships it: `npm pack` of the sources, `npm install -g` of the tarball into a temp prefix (and
 * `npx` of the tarball), then the installed `nginx-lb` on PATH validates and serves the bundled example through the
 * real nginx, with the Lua balancer (dynamic endpoints) and the native reaper (as pid 1) found in the install.
 * Needs the npm registry for the dependencies.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, realpathSync } from "node:fs";
import { cp, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { Controller, eventually } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePorts, tempDir } from "../helpers/nginx.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const PKG = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { name: string; version: string };

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

const run = (cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }) =>
  new Promise<Ran>((resolve) =>
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    ),
  );

let dir = "";
let tarball = "";
let prefix = "";
let installed = "";
let pool: BackendPool;
/** The environment a user's shell would have after the install: the prefix's bin first on PATH. */
const userEnv = () => ({
  PATH: `${prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  HOME: dir,
  TZ: "UTC",
});

beforeAll(async () => {
  dir = await tempDir("nginx-lb-npm-");
  // Pack a copy of the working tree (tracked and new files, as git sees them), so `prepack` rebuilding dist/ never
  // pulls dist/ from under another test of this checkout.
  const src = join(dir, "src");
  const files = (
    await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT })
  ).stdout
    .split("\0")
    .filter((f) => f !== "" && f !== "node_modules" && existsSync(join(ROOT, f)));
  for (const f of files) await cp(join(ROOT, f), join(src, f), { recursive: true });
  await symlink(realpathSync(join(ROOT, "node_modules")), join(src, "node_modules"));
  const packed = await run("npm", ["pack", "--pack-destination", dir], { cwd: src, timeoutMs: 240_000 });
  expect(packed.code, packed.stderr).toBe(0);
  tarball = join(dir, `${PKG.name}-${PKG.version}.tgz`);
  prefix = join(dir, "prefix");
  const inst = await run("npm", ["install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", tarball], {
    cwd: dir,
    timeoutMs: 240_000,
  });
  expect(inst.code, inst.stderr).toBe(0);
  installed = join(prefix, "lib/node_modules", PKG.name);
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
}, 600_000);

afterAll(async () => {
  await pool?.close();
  await cleanupNginx();
});

describe("npm pack", () => {
  test("ships the built CLI, the Lua modules, the addon's sources and the example; no tests, no TypeScript", async () => {
    const list = (await run("tar", ["tzf", tarball], { cwd: dir })).stdout.split("\n").filter(Boolean);
    const names = list.map((l) => l.replace(/^package\//, ""));
    const lua = readdirSync(join(ROOT, "src/nginx/lua")).filter((f) => f.endsWith(".lua"));
    expect(lua.length).toBeGreaterThan(0);
    expect(names).toEqual(
      expect.arrayContaining([
        "package.json",
        "README.md",
        "bin/nginx-lb.js",
        "dist/cli/main.js",
        "dist/nginx/lua-source.js",
        "binding.gyp",
        "native/reaper.c",
        "examples/services.json",
        "examples/backends.json",
        ...lua.map((f) => `src/nginx/lua/${f}`),
      ]),
    );
    const unwanted = names.filter(
      (n) =>
        /\.test\.|^test\/|^bench\/|\.ts$|\.map$|^tsconfig|^package-lock|^node_modules\/|^build\//.test(n) ||
        (n.startsWith("src/") && !n.startsWith("src/nginx/lua/")),
    );
    expect(unwanted).toEqual([]);
  });
});

describe("npm install -g of the tarball", () => {
  test("puts nginx-lb on PATH: --version and version print the package's version", async () => {
    for (const args of [["--version"], ["version"]]) {
      const r = await run("nginx-lb", args, { cwd: dir, env: userEnv() });
      expect(r).toEqual({ code: 0, stdout: `${PKG.version}\n`, stderr: "" });
    }
  });

  test("builds the native reaper at install", () => {
    expect(existsSync(join(installed, "build/Release/reaper.node"))).toBe(true);
  });

  test("validates the bundled example", async () => {
    const r = await run("nginx-lb", ["validate", "examples/services.json"], { cwd: installed, env: userEnv() });
    expect(r.stderr).toContain("valid (2 servers, 3 routes)");
    expect(r.code).toBe(0);
  });

  test("npx of the tarball runs it too", async () => {
    const r = await run("npm", ["exec", "--yes", "--package", tarball, "--", "nginx-lb", "version"], {
      cwd: dir,
      env: { ...userEnv(), npm_config_cache: join(dir, "npx-cache") },
      timeoutMs: 240_000,
    });
    expect(r.stdout.trim().split("\n").at(-1)).toBe(PKG.version);
    expect(r.code).toBe(0);
  }, 300_000);

  test("`nginx-lb run` serves the bundled example through nginx: Lua balancer and native reaper found", async () => {
    // The example with free ports: its frontend ports, and the echo backends' port for every route.
    const [http = 0, https = 0, admin = 0] = await freePorts(3);
    const example = JSON.parse(await readFile(join(installed, "examples/services.json"), "utf8")) as {
      servers: {
        frontend_port: number;
        ssl_port?: number;
        routes: Record<string, { port: number; backup?: object }>;
      }[];
    };
    for (const s of example.servers) {
      s.frontend_port = http;
      if (s.ssl_port !== undefined) s.ssl_port = https;
      for (const r of Object.values(s.routes)) {
        r.port = pool.port;
        if (r.backup) Object.assign(r.backup, { port: pool.port });
      }
    }
    const work = join(dir, "run");
    await mkdir(work);
    await writeFile(join(work, "services.json"), JSON.stringify(example));
    // As pid 1 of its own pid namespace, as in a container: that is when the native reaper is loaded.
    const child = spawn(
      "unshare",
      [
        "--pid",
        "--fork",
        "--mount-proc",
        "nginx-lb",
        "run",
        "--services",
        "services.json",
        "--backends",
        join(installed, "examples/backends.json"),
        "--state-dir",
        join(work, "state"),
        "--listen-host",
        "127.0.0.1",
        "--worker-processes",
        "1",
        "--endpoints-mode",
        "dynamic",
        "--admin-listen",
        `127.0.0.1:${admin}`,
      ],
      { cwd: work, env: userEnv(), stdio: ["ignore", "ignore", "pipe"] },
    );
    const lb = new Controller(child, true);
    try {
      await lb.waitFor(/nginx-lb is running/, 30_000);
      expect(lb.find(/running as pid 1: reaping orphaned processes/)).toHaveLength(1);
      await eventually(
        async () => (await get(`http://127.0.0.1:${admin}/readyz`)).status === 200,
        20_000,
        "/readyz 200",
      );
      const status = (await get(`http://127.0.0.1:${admin}/api/status`)).json<{ nginx: { endpointsMode: string } }>();
      expect(status.nginx.endpointsMode).toBe("dynamic");
      const r = await get(`http://127.0.0.1:${http}/foo?x=1`, { host: "demo.example.com" });
      expect(r.status).toBe(200);
      const echo = r.json<Echo>();
      expect(["127.0.0.2", "127.0.0.3"]).toContain(echo.backend);
      expect(echo.url).toBe("/v2/foo?x=1");
      const none = await get(`http://127.0.0.1:${http}/`, { host: "test.example.com" });
      expect(none.status).toBe(503);
    } finally {
      const code = await lb.stop();
      if (lb.lines.some((l) => l.level >= 50)) console.error(lb.lines.slice(-30));
      expect(code).toBe(0);
    }
  });
});
