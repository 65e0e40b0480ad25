import { execFileSync } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import {
  Controller,
  eventually,
  sleep,
  startController,
  stopAllControllers,
  writeServices,
} from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { load } from "../helpers/load.js";
import { cleanupNginx, freePort, tempDir, unconfirmedNginx } from "../helpers/nginx.js";
import { DEFAULT_MIN_GAP_MS, DEFAULT_SAVE_GAP_MS } from "../../src/reconciler/reconciler.js";

/** The daemon driven as a user drives it: a real `nginx-lb run` process, real nginx, real backends, a backends file. */

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

interface Setup {
  dir: string;
  services: string;
  backends: string;
  port: number;
  lb: Controller;
  url: (path?: string) => string;
}

const route = (app: string, port: number) => ({ app, service: "api", port });
const server = (port: number, routes: Record<string, unknown>) => ({
  domain_name: "a.test",
  frontend_port: port,
  routes,
});

async function setup(
  endpoints: Record<string, Record<string, { weight: number }>>,
  extraArgs: string[] = [],
): Promise<Setup> {
  const dir = await tempDir("nginx-lb-daemon-");
  const port = await freePort();
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(services, [server(port, { "/": route("web", pool.port) })]);
  await writeFile(backends, JSON.stringify(endpoints));
  const lb = await startController({
    env: modeEnv(),
    stateDir: join(dir, "state"),
    services,
    args: ["--backends", backends, ...extraArgs],
  });
  await lb.waitFor(/nginx started|config applied/);
  return { dir, services, backends, port, lb, url: (p = "/") => `http://127.0.0.1:${port}${p}` };
}

const who = async (url: string) => (await get(url, { host: "a.test" })).json<Echo>().backend;

/** nginx masters running on a state dir. */
function masters(stateDir: string): number {
  const out = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.startsWith("nginx: master") && l.includes(stateDir)).length;
}

/**
 * The endpoints mode the current describe block runs in: the whole suite runs once per mode, and a third time with
 * routes pushed too (`routes`: dynamic endpoints and `--routes-mode dynamic`).
 */
let mode: "reload" | "dynamic" = "reload";
let routes: "reload" | "dynamic" = "reload";
const modeEnv = () => ({ NGINX_LB_ENDPOINTS_MODE: mode, NGINX_LB_ROUTES_MODE: routes });

describe.each([
  ["reload", "reload"],
  ["dynamic", "reload"],
  ["dynamic", "dynamic"],
] as const)("nginx-lb run with a backends file (%s endpoints, %s routes)", (m, r) => {
  beforeAll(() => {
    mode = m;
    routes = r;
  });

  it("follows endpoint changes: traffic starts and stops reaching a backend", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    expect(await who(s.url())).toBe("127.0.0.2");
    await writeFile(
      s.backends,
      JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } }),
    );
    await eventually(async () => (await who(s.url())) === "127.0.0.3", 10_000, "traffic reaching 127.0.0.3");
    await writeFile(s.backends, JSON.stringify({ "web-api": { "127.0.0.3": { weight: 1 } } }));
    await eventually(
      async () => {
        for (let i = 0; i < 10; i++) if ((await who(s.url())) !== "127.0.0.3") return false;
        return true;
      },
      10_000,
      "traffic only on 127.0.0.3",
    );
    // Each apply logs what it changed.
    await s.lb.waitFor(/"endpoints":\{"added":\[\],"removed":\["a\.test:\d+\/ 127\.0\.0\.2:\d+ w1"\]/);
    await s.lb.stop();
  });

  it("SIGUSR2 applies a new route; an invalid edit keeps the old routes serving and names the error", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } }, "new-api": { "127.0.0.4": { weight: 1 } } }, [
      "--no-watch",
    ]);
    await writeServices(s.services, [
      server(s.port, { "/": route("web", pool.port), "/new": route("new", pool.port) }),
    ]);
    s.lb.signal("SIGUSR2");
    // Once the apply is logged, every accepting nginx worker runs the new config.
    // Dynamic routes: a route added on a port already listened on is a push.
    await s.lb.waitFor(
      routes === "dynamic"
        ? /"reason":"services.json: SIGUSR2".*endpoints pushed/
        : /"reason":"services.json: SIGUSR2".*config applied/,
    );
    if (routes === "dynamic") expect(s.lb.applies("reload")).toEqual([]);
    for (let i = 0; i < 20; i++) expect(await who(s.url("/new/x"))).toBe("127.0.0.4");

    await writeFile(
      s.services,
      JSON.stringify({
        servers: [
          {
            domain_name: "a.test",
            frontend_port: s.port,
            routes: { "/": { app: "web", service: "api", port: "80a" } },
          },
        ],
      }),
    );
    s.lb.signal("SIGUSR2");
    const err = await s.lb.waitFor(/services.json is invalid/);
    expect(JSON.stringify(err["errors"])).toContain(
      `servers[0].routes[\\"/\\"].port: port must be an integer from 1 to 65535, got \\"80a\\"`,
    );
    expect(await who(s.url("/new/x"))).toBe("127.0.0.4");
    expect(await who(s.url("/"))).toBe("127.0.0.2");
    // Endpoint changes keep applying while the routing file is broken.
    await writeFile(
      s.backends,
      JSON.stringify({ "web-api": { "127.0.0.3": { weight: 1 } }, "new-api": { "127.0.0.4": { weight: 1 } } }),
    );
    await eventually(
      async () => (await who(s.url("/"))) === "127.0.0.3",
      10_000,
      "endpoint change while services.json is invalid",
    );
    await s.lb.stop();
  });

  it("a candidate nginx cannot take (its port is held by another process) leaves the previous config serving", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } }, ["--no-watch"]);
    const held: Server = createServer();
    const heldPort = await freePort();
    await new Promise<void>((r) => held.listen(heldPort, "127.0.0.1", r));
    try {
      await writeServices(s.services, [
        server(s.port, { "/": route("web", pool.port) }),
        { domain_name: "b.test", frontend_port: heldPort, routes: {} },
      ]);
      s.lb.signal("SIGUSR2");
      const failed = await s.lb.waitFor(/apply failed/);
      expect(String(failed["error"])).toMatch(/Address already in use/);
      expect(await who(s.url())).toBe("127.0.0.2");
      const conf = await readFile(join(s.dir, "state/nginx.conf"), "utf8");
      expect(conf).not.toContain(`:${heldPort}`);
    } finally {
      held.close();
    }
    await s.lb.stop();
  });

  it("restarts nginx on the last good config when it dies", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const pid = Number((await readFile(join(s.dir, "state/nginx.pid"), "utf8")).trim());
    process.kill(pid, "SIGKILL");
    await s.lb.waitFor(/nginx exited unexpectedly/);
    // The killed master's workers finish their requests and may still answer: wait for the new master itself.
    await eventually(async () => s.lb.find(/^started nginx$/).length >= 2, 15_000, "a new nginx master");
    await eventually(async () => (await who(s.url())) === "127.0.0.2", 15_000, "traffic after the restart");
    expect(masters(join(s.dir, "state"))).toBe(1);
    await s.lb.stop();
  });

  it("a server on the control port is refused while running, and a restart moves the control port off it", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const stateDir = join(s.dir, "state");
    const controlPort = async () =>
      (JSON.parse(await readFile(join(stateDir, "control.json"), "utf8")) as { controlPort: number }).controlPort;
    const taken = await controlPort();
    const claiming = { ...server(taken, { "/": route("web", pool.port) }), domain_name: "b.test" };
    await writeServices(s.services, [server(s.port, { "/": route("web", pool.port) }), claiming]);
    const refused = await s.lb.waitFor(/services.json is invalid/);
    expect(JSON.stringify(refused["errors"])).toContain(
      `servers[1].frontend_port: port ${taken} is nginx-lb's control port`,
    );
    expect(await who(s.url())).toBe("127.0.0.2");
    await s.lb.stop();

    const lb = await startController({
      env: modeEnv(),
      stateDir,
      services: s.services,
      args: ["--backends", s.backends],
    });
    await lb.waitFor(/moved the control port/);
    await lb.waitFor(/nginx started|config applied/);
    expect(await controlPort()).not.toBe(taken);
    await eventually(
      async () => (await get(`http://127.0.0.1:${taken}/`, { host: "b.test" })).json<Echo>().backend === "127.0.0.2",
      10_000,
      "b.test served on the old control port",
    );
    expect(await who(s.url())).toBe("127.0.0.2");
    await lb.stop();
  });

  it("a controller SIGKILLed and restarted under load drops no request and leaves one nginx master", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } });
    const stateDir = join(s.dir, "state");
    const traffic = load(s.url(), { host: "a.test", count: 3000, concurrency: 4, maxMs: 60_000 });
    await sleep(300);
    s.lb.signal("SIGKILL");
    await s.lb.exited;
    await sleep(300);
    const lb2 = await startController({
      env: modeEnv(),
      stateDir,
      services: s.services,
      args: ["--backends", s.backends],
    });
    await lb2.waitFor(/adopted the running nginx master/);
    await traffic.finished;
    expect(traffic.done).toBeGreaterThanOrEqual(1000);
    expect(traffic.failures).toEqual([]);
    expect(masters(stateDir)).toBe(1);
    // Same inputs, same bytes: the new controller does not reload (dynamic mode re-pushes the same sets once).
    await lb2.waitFor(mode === "reload" ? /config unchanged/ : /endpoints pushed/);
    expect(lb2.applies("reload")).toEqual([]);
    await lb2.stop();
    expect(masters(stateDir)).toBe(0);
  });

  it("a burst of 500 endpoint changes costs at most 5 reloads (none in dynamic mode) and ends with all 500", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const set: Record<string, { weight: number }> = { "127.0.0.2": { weight: 1 } };
    const before = s.lb.applies("reload").length;
    const started = Date.now();
    for (let i = 0; i < 500; i++) {
      set[`10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`] = { weight: 1 };
      await writeFile(s.backends, JSON.stringify({ "web-api": set }));
      await sleep(1);
    }
    // Reload mode applies at most once per minimum gap after the previous apply: a burst written within 5 s costs at
    // most 5 reloads; on a machine so loaded that writing it took longer, the gap bounds the count.
    const burstMs = Date.now() - started;
    const reloadBound = burstMs < 5_000 ? 5 : Math.ceil(burstMs / DEFAULT_MIN_GAP_MS) + 1;
    // state.json is written after nginx took the change (reload confirmed, or push acknowledged).
    const applied = async () => {
      const state = JSON.parse(await readFile(join(s.dir, "state/state.json"), "utf8")) as {
        backends: Record<string, Record<string, unknown>>;
      };
      return Object.keys(state.backends["web-api"] ?? {}).filter((ip) => ip.startsWith("10.1.")).length === 500;
    };
    await eventually(applied, 10_000, "all 500 endpoints applied");
    if (mode === "reload")
      expect((await readFile(join(s.dir, "state/nginx.conf"), "utf8")).match(/server 10\.1\./g)?.length).toBe(500);
    await sleep(500);
    const reloads = s.lb.applies("reload").length - before;
    if (mode === "reload") {
      expect(reloads).toBeGreaterThanOrEqual(1);
      expect(reloads).toBeLessThanOrEqual(reloadBound);
    } else {
      expect(reloads).toBe(0);
      expect(s.lb.applies("push").length).toBeGreaterThanOrEqual(1);
    }
    await s.lb.stop();
  });

  it("endpoints churning every 100 ms under a bounded load loop: zero failed requests", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } } });
    const traffic = load(s.url(), { host: "a.test", count: 4000, concurrency: 4, maxMs: 8_000 });
    const variants = [
      ["127.0.0.2", "127.0.0.3"],
      ["127.0.0.3", "127.0.0.4"],
      ["127.0.0.4", "127.0.0.5"],
      ["127.0.0.5", "127.0.0.2"],
    ];
    for (let i = 0; i < 40; i++) {
      const ips = variants[i % variants.length] ?? [];
      await writeFile(
        s.backends,
        JSON.stringify({ "web-api": Object.fromEntries(ips.map((ip) => [ip, { weight: 1 }])) }),
      );
      await sleep(100);
    }
    await traffic.stop();
    expect(traffic.done).toBeGreaterThan(200);
    expect(traffic.failures).toEqual([]);
    if (mode === "reload") expect(s.lb.applies("reload").length).toBeGreaterThan(3);
    else {
      expect(s.lb.applies("reload")).toEqual([]);
      expect(s.lb.applies("push").length).toBeGreaterThan(3);
    }
    await s.lb.stop();
  });

  it("keys no route references are kept but never cause a reload", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const before = s.lb.applies("reload").length;
    await writeFile(
      s.backends,
      JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } }, "other-svc": { "10.9.9.9": { weight: 5 } } }),
    );
    await s.lb.waitFor(/config unchanged/);
    await sleep(300);
    expect(s.lb.applies("reload").length).toBe(before);
    // Saved within the save gap (a second) after the start's own save.
    const kept = async () => {
      const state = JSON.parse(await readFile(join(s.dir, "state/state.json"), "utf8")) as {
        backends: Record<string, unknown>;
      };
      return Object.keys(state.backends).includes("other-svc");
    };
    await eventually(kept, 5_000, "state.json keeps other-svc");
    await s.lb.stop();
  });

  it("SIGTERM stops gracefully: nginx quits, the controller exits 0", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    expect(masters(join(s.dir, "state"))).toBe(1);
    expect(await s.lb.stop()).toBe(0);
    expect(masters(join(s.dir, "state"))).toBe(0);
  });

  it("SIGTERM right after a change leaves that change in state.json (a save the save gap held back)", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const file = join(s.dir, "state/state.json");
    const saved = async () =>
      (JSON.parse(await readFile(file, "utf8")) as { backends: Record<string, Record<string, unknown>> }).backends;
    const handled = () => s.lb.find(/^(config applied|config unchanged: no reload|endpoints pushed)$/).length;
    // A quiet spell, so the first change is saved at once; the second comes within the save gap after that save.
    await sleep(DEFAULT_SAVE_GAP_MS + 100);
    const web = { "127.0.0.2": { weight: 1 }, "127.0.0.3": { weight: 1 } };
    await writeFile(s.backends, JSON.stringify({ "web-api": web }));
    await eventually(async () => "127.0.0.3" in ((await saved())["web-api"] ?? {}), 5_000, "the first change saved");
    const before = handled();
    await writeFile(s.backends, JSON.stringify({ "web-api": web, "other-svc": { "10.9.9.9": { weight: 5 } } }));
    await eventually(async () => handled() > before, 5_000, "the second change handled");
    expect(await s.lb.stop()).toBe(0);
    expect(Object.keys(await saved())).toContain("other-svc");
  });

  it("without a registry every route answers 503 and the log says why", async () => {
    const dir = await tempDir("nginx-lb-daemon-");
    const port = await freePort();
    const services = join(dir, "services.json");
    await writeServices(services, [server(port, { "/": route("web", pool.port) })]);
    const lb = await startController({
      env: modeEnv(),
      stateDir: join(dir, "state"),
      services,
    });
    await lb.waitFor(/no registry given/);
    await lb.waitFor(/nginx started/);
    const r = await get(`http://127.0.0.1:${port}/`, { host: "a.test" });
    expect(r.status).toBe(503);
    expect(r.body).toContain("no endpoint for route /");
    await lb.stop();
  });

  it("as pid 1 of a new pid namespace, `kill -USR2 1` from inside applies the file", async () => {
    const dir = await tempDir("nginx-lb-pid1-");
    const port = await freePort();
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    await writeServices(services, [server(port, { "/": route("web", pool.port) })]);
    await writeFile(
      backends,
      JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } }, "new-api": { "127.0.0.5": { weight: 1 } } }),
    );
    const lb = await startController({
      env: modeEnv(),
      stateDir: join(dir, "state"),
      services,
      args: ["--backends", backends, "--no-watch"],
      wrap: ["unshare", "--pid", "--fork", "--mount-proc"],
    });
    await lb.waitFor(/nginx started/);
    const inner = Number(
      execFileSync("cat", [`/proc/${lb.child.pid}/task/${lb.child.pid}/children`], { encoding: "utf8" })
        .trim()
        .split(/\s+/)[0],
    );
    expect(
      execFileSync("nsenter", ["-t", String(inner), "-p", "-m", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], {
        encoding: "utf8",
      }),
    ).toContain("src/cli/main.ts run");
    await writeServices(services, [server(port, { "/": route("web", pool.port), "/new": route("new", pool.port) })]);
    execFileSync("nsenter", ["-t", String(inner), "-p", "-m", "kill", "-USR2", "1"]);
    await eventually(async () => (await who(`http://127.0.0.1:${port}/new`)) === "127.0.0.5", 10_000, "the new route");
    // A killed nginx master leaves workers that end up as pid 1's children: they must be reaped, not left as zombies.
    const master = Number((await readFile(join(dir, "state/nginx.pid"), "utf8")).trim());
    execFileSync("nsenter", ["-t", String(inner), "-p", "-m", "kill", "-KILL", String(master)]);
    await lb.waitFor(/nginx exited unexpectedly/);
    await eventually(
      async () => (await who(`http://127.0.0.1:${port}/new`)) === "127.0.0.5",
      15_000,
      "traffic after the nginx restart",
    );
    const zombies = () =>
      execFileSync("ps", ["-eo", "stat=,ppid="], { encoding: "utf8" })
        .split("\n")
        .filter((l) => /^Z\S*\s+(\d+)$/.test(l.trim()) && Number(l.trim().split(/\s+/)[1]) === inner).length;
    await eventually(async () => zombies() === 0, 10_000, "no zombie children of pid 1");
    // Signals reach pid 1 only through its own handlers; SIGTERM must still stop it (and its nginx).
    execFileSync("nsenter", ["-t", String(inner), "-p", "-m", "kill", "-TERM", "1"]);
    const code = await Promise.race([lb.exited, sleep(15_000).then(() => "timeout")]);
    expect(code).toBe(0);
    expect(masters(join(dir, "state"))).toBe(0);
  });
});

describe("nginx-lb run when nothing changes", () => {
  beforeAll(() => {
    mode = "dynamic";
    routes = "dynamic";
  });

  it("collects its heap once per quiet spell (5 s after the last activity), and serves on", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } });
    const collected = () => s.lb.lines.filter((l) => l.msg === "heap collected while idle");
    const first = await s.lb.waitFor(/heap collected while idle/, 20_000);
    expect(first["ms"]).toEqual(expect.any(Number));
    expect(first["heapMiB"]).toEqual({
      used: expect.any(Number),
      committed: expect.any(Number),
      external: expect.any(Number),
    });
    // Nothing happened since: no second collection.
    await sleep(6_000);
    expect(collected()).toHaveLength(1);
    expect(await who(s.url())).toBe("127.0.0.2");
    // A change is activity: one more collection once it has been quiet again.
    await writeFile(s.backends, JSON.stringify({ "web-api": { "127.0.0.3": { weight: 1 } } }));
    await eventually(async () => (await who(s.url())) === "127.0.0.3", 10_000, "traffic on 127.0.0.3");
    await eventually(async () => collected().length === 2, 15_000, "a second collection after the change");
    await s.lb.stop();
  }, 60_000);
});

describe("nginx-lb run with its frontends on another address", () => {
  beforeAll(() => {
    mode = "dynamic";
    routes = "dynamic";
  });

  it("serves a server on the control port's number: 127.0.0.20:P is another socket than the control server's", async () => {
    const s = await setup({ "web-api": { "127.0.0.2": { weight: 1 } } }, ["--listen-host", "127.0.0.20"]);
    const controlPort = (
      JSON.parse(await readFile(join(s.dir, "state/control.json"), "utf8")) as { controlPort: number }
    ).controlPort;
    const onControl = { ...server(controlPort, { "/": route("web", pool.port) }), domain_name: "b.test" };
    await writeServices(s.services, [server(s.port, { "/": route("web", pool.port) }), onControl]);
    await eventually(
      async () =>
        (await get(`http://127.0.0.20:${controlPort}/`, { host: "b.test" }).catch(() => null))?.json<Echo>().backend ===
        "127.0.0.2",
      15_000,
      "b.test on 127.0.0.20 at the control port's number",
    );
    expect(s.lb.find(/services.json is invalid/)).toEqual([]);
    await s.lb.stop();
  });
});

describe("nginx-lb run stopped while nginx starts", () => {
  it("SIGTERM ends the wait for a new master that has not answered yet: the controller exits and stops nginx", async () => {
    const dir = await tempDir("nginx-lb-daemon-");
    const wrapper = await unconfirmedNginx(dir);
    const services = join(dir, "services.json");
    await writeServices(services, [server(await freePort(), { "/": route("web", pool.port) })]);
    const lb = await startController({ stateDir: join(dir, "state"), services, args: ["--nginx", wrapper] });
    await lb.waitFor(/^started nginx$/);
    await sleep(1_000);
    expect(lb.applies()).toEqual([]);
    const asked = Date.now();
    lb.signal("SIGTERM");
    const code = await Promise.race([lb.exited, sleep(15_000).then(() => "still running after 15 s")]);
    expect(code).toBe(0);
    // nginx drains for up to 10 s on a stop; the start's own wait is a minute.
    expect(Date.now() - asked).toBeLessThan(12_000);
    expect(masters(join(dir, "state"))).toBe(0);
    // An asked-for stop is no failure: the start cut short is said at info, nothing at error.
    expect(lb.lines.filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([]);
    // nginx was started on this config: its routes and endpoints are what a restart without sources serves.
    await lb.waitFor(/nginx's start was not confirmed; its routes and endpoints are saved/);
    await stat(join(dir, "state/state.json"));
  });
});
