/**
 * A state dir that fills up during a run (a small tmpfs): the apply is recorded failed with the reason, nginx keeps
 * serving the last good config, the controller does not crash, and once space is back it recovers by itself, leaving
 * no temp file behind. In dynamic mode an endpoint change is a push that needs no disk: it keeps applying while the
 * state save is reported failing. Runs the real `nginx-lb run` with real nginx and HTTP backends.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import {
  eventually,
  startController,
  stopAllControllers,
  writeServices,
  type Controller,
} from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePorts, tempDir } from "../helpers/nginx.js";

const run = promisify(execFile);

/** Mounts a tmpfs of `size` on a new dir; null when this machine does not allow it (not root, no CAP_SYS_ADMIN). */
async function smallDisk(size: string): Promise<string | null> {
  // Not a tempDir: cleanupNginx would remove it while still mounted.
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-full-"));
  try {
    await run("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir]);
    return dir;
  } catch {
    await rm(dir, { recursive: true, force: true });
    return null;
  }
}

/** Writes zeros until the disk is full (dd stops at ENOSPC). */
async function fill(dir: string): Promise<void> {
  await run("dd", ["if=/dev/zero", `of=${join(dir, "filler")}`, "bs=4k"]).catch(() => undefined);
}

async function tempFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir, { recursive: true });
  return names.filter((n) => /\.tmp-/.test(n));
}

/**
 * No temp file stays behind: a write in flight has one for a moment (the start-up files are written up to a second
 * after a push), so a name may be seen once, but a failed write must have removed its own within the wait.
 */
async function noTempFilesLeft(dir: string): Promise<void> {
  let left: string[] = [];
  await eventually(
    async () => (left = await tempFiles(dir)).length === 0,
    5_000,
    "no temp file left in the state dir",
  ).catch(() => expect(left).toEqual([]));
}

const probe = await smallDisk("1m");
if (probe) await run("umount", [probe]).then(() => rm(probe, { recursive: true, force: true }));
const reason = probe ? "" : " (skipped: mounting a tmpfs needs root with CAP_SYS_ADMIN)";

interface Status {
  ready: { ready: boolean; why: string };
  nginx: { running: boolean; generation: string | null };
  persist: { ok: boolean; error?: string } | null;
  applies: { result: string; action: string; reason: string; error?: string }[];
}

let pool: BackendPool;
const mounts: string[] = [];
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
});
afterAll(async () => {
  await stopAllControllers();
  for (const m of mounts) await run("umount", ["-l", m]).catch(() => undefined);
  for (const m of mounts) await rm(m, { recursive: true, force: true });
  await cleanupNginx();
  await pool?.close();
});

interface Lb {
  lb: Controller;
  state: string;
  status(): Promise<Status>;
  readyz(): Promise<{ status: number; body: string }>;
  site(path?: string): Promise<string>;
  setEndpoints(ip: string): Promise<void>;
  setRoutes(extra: boolean): Promise<void>;
}

/** `nginx-lb run` with its state dir on a 2 MB tmpfs, over a backends file, admin on a free port. */
async function start(mode: Modes, state: string, wait = true): Promise<Lb> {
  const dir = await tempDir("nginx-lb-full-conf-");
  const [sitePort = 0, adminPort = 0] = await freePorts(2);
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  const routes = (extra: boolean) => [
    {
      domain_name: "a.test",
      frontend_port: sitePort,
      routes: {
        "/": { app: "web", service: "api", port: pool.port },
        ...(extra ? { "/new": { app: "new", service: "api", port: pool.port } } : {}),
      },
    },
  ];
  const endpoints = (ip: string) => ({ "web-api": { [ip]: { weight: 1 } }, "new-api": { "127.0.0.4": { weight: 1 } } });
  await writeServices(services, routes(false));
  await writeFile(backends, JSON.stringify(endpoints("127.0.0.2")));
  const lb = await startController({
    stateDir: state,
    services,
    args: ["--backends", backends, "--endpoints-mode", mode[0], "--routes-mode", mode[1]].concat([
      "--admin-listen",
      `127.0.0.1:${adminPort}`,
    ]),
  });
  const admin = (path: string) => get(`http://127.0.0.1:${adminPort}${path}`);
  const t: Lb = {
    lb,
    state,
    status: async () => JSON.parse((await admin("/api/status")).body) as Status,
    readyz: () => admin("/readyz"),
    site: async (path = "/") => {
      const r = await get(`http://127.0.0.1:${sitePort}${path}`, { host: "a.test" });
      return r.status === 200 ? (JSON.parse(r.body) as { backend: string }).backend : `HTTP ${r.status}`;
    },
    setEndpoints: async (ip) => {
      await writeFile(`${backends}.tmp`, JSON.stringify(endpoints(ip)));
      await run("mv", [`${backends}.tmp`, backends]);
    },
    setRoutes: (extra) => writeServices(services, routes(extra)),
  };
  if (wait) await eventually(async () => (await admin("/readyz")).status === 200, 20_000, "/readyz 200");
  return t;
}

const saved = async (state: string) => readFile(join(state, "state.json"), "utf8");
const alive = (lb: Controller) => lb.child.exitCode === null && lb.child.signalCode === null;

/** The endpoints mode and the routes mode. */
type Modes = readonly ["reload" | "dynamic", "reload" | "dynamic"];

// Routes rendered in both endpoint modes (a routing change needs a new nginx.conf), and pushed (the default with
// dynamic endpoints: a routing change on a port already open needs no disk).
describe.each([
  ["reload", "reload"],
  ["dynamic", "reload"],
  ["dynamic", "dynamic"],
] as const)(`a full state dir (%s endpoints, %s routes)${reason}`, (...modes) => {
  const mode = modes[0];
  const routesMode = modes[1];
  it.skipIf(!probe)("fails the apply with the reason, keeps serving, and recovers once space is back", async () => {
    const disk = (await smallDisk("2m")) as string;
    mounts.push(disk);
    const state = join(disk, "state");
    await mkdir(state, { mode: 0o700 });
    const t = await start(modes, state);
    expect(await t.site()).toMatch(/^127\.0\.0\.2/);
    const generation = (await t.status()).nginx.generation;

    await fill(disk);
    if (mode === "reload") {
      // An endpoint change needs a new nginx.conf, which cannot be written.
      await t.setEndpoints("127.0.0.3");
      const failed = await eventually(
        async () => {
          const a = (await t.status()).applies[0];
          return a?.result === "failed" && a;
        },
        15_000,
        "a failed apply",
      );
      expect(failed.error).toMatch(/no space left on device/i);
      expect(failed.reason).toMatch(/registry|backends/);
    } else {
      // A push needs no disk: the endpoint change applies, while saving state.json is reported failing.
      await t.setEndpoints("127.0.0.3");
      await eventually(async () => (await t.site()).startsWith("127.0.0.3"), 15_000, "the pushed endpoint");
      const s = await eventually(
        async () => {
          const p = (await t.status()).persist;
          return p?.ok === false && p;
        },
        15_000,
        "persist reported failing",
      );
      expect(s.error).toMatch(/no space left on device/i);
      await t.setRoutes(true);
      if (routesMode === "reload") {
        // A routing change needs a new nginx.conf: it fails with the reason.
        const failed = await eventually(
          async () => {
            const a = (await t.status()).applies[0];
            return a?.result === "failed" && a;
          },
          15_000,
          "a failed apply",
        );
        expect(failed.error).toMatch(/no space left on device/i);
        expect(failed.reason).toMatch(/services\.json/);
      } else {
        // Routes pushed: a route added on a port already open is a push too, served with the disk full.
        await eventually(async () => (await t.site("/new/")).startsWith("127.0.0.4"), 15_000, "the pushed route");
      }
    }
    // nginx keeps serving the last good config; the controller is alive and still ready.
    const status = await t.status();
    expect(status.nginx).toMatchObject({ running: true, generation });
    expect((await t.readyz()).status).toBe(200);
    expect(await t.site()).toMatch(mode === "reload" ? /^127\.0\.0\.2/ : /^127\.0\.0\.3/);
    expect(alive(t.lb)).toBe(true);
    await noTempFilesLeft(state);

    await rm(join(disk, "filler"));
    // Recovery by itself: the retried apply (backoff at most 10 s) lands and state.json is saved again.
    if (mode === "reload") {
      await eventually(async () => (await t.site()).startsWith("127.0.0.3"), 25_000, "the endpoint change applied");
    } else {
      await eventually(async () => (await t.site("/new/")).startsWith("127.0.0.4"), 25_000, "the new route");
      expect(await t.site()).toMatch(/^127\.0\.0\.3/);
    }
    await eventually(async () => (await t.status()).applies[0]?.result === "applied", 25_000, "an applied record");
    await eventually(async () => (await saved(state)).includes("127.0.0.3"), 25_000, "state.json saved");
    await eventually(async () => (await t.status()).persist?.ok === true, 25_000, "persist ok");
    // The routing change's own save may follow the endpoint change's (each apply saves when it lands).
    if (mode === "dynamic")
      await eventually(async () => (await saved(state)).includes("/new"), 25_000, "state.json with /new");
    expect(alive(t.lb)).toBe(true);
    await noTempFilesLeft(state);
    await t.lb.stop();
  });

  it.skipIf(!probe)("starts on a full state dir without crashing, says why in /readyz, and recovers", async () => {
    const disk = (await smallDisk("2m")) as string;
    mounts.push(disk);
    const state = join(disk, "state");
    await mkdir(state, { mode: 0o700 });
    await fill(disk);
    const t = await start(modes, state, false);
    const why = await eventually(
      async () => {
        const r = await t.readyz();
        return r.status === 503 && /no space left on device/i.test(r.body) && r.body;
      },
      20_000,
      "/readyz naming the full disk",
    );
    expect(why).toMatch(/not ready/);
    expect(alive(t.lb)).toBe(true);
    await rm(join(disk, "filler"));
    await eventually(async () => (await t.readyz()).status === 200, 25_000, "/readyz 200 once space is back");
    expect(await t.site()).toMatch(/^127\.0\.0\.2/);
    await eventually(async () => (await saved(state)).includes("127.0.0.2"), 25_000, "state.json saved");
    await noTempFilesLeft(state);
    await t.lb.stop();
  });
});
