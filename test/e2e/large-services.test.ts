/**
 * A large services.json at the real CLI: its first read runs on a worker thread (src/sources/first-read.ts) while the
 * controller's thread starts the rest, and what it read must serve exactly as the controller's own read would, and
 * carry the next change (an edit read incrementally from the worker's read).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { WORKER_MIN_BYTES } from "../../src/sources/first-read.js";

let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool.close();
  await cleanupNginx();
});

const SITES = 8_000;

describe("a services.json over the worker's threshold", () => {
  it("is read on the worker, serves every site, and takes the next edit", async () => {
    const dir = await tempDir("nginx-lb-large-services-");
    const port = await freePort();
    const services = join(dir, "services.json");
    const backends = join(dir, "backends.json");
    const site = (i: number, app = "web") => ({
      domain_name: `s${i}.large.test`,
      frontend_port: port,
      routes: { "/": { app, service: "api", port: pool.port } },
    });
    const servers = Array.from({ length: SITES }, (_, i) => site(i));
    await writeServices(services, servers);
    await writeFile(
      backends,
      JSON.stringify({ "web-api": { "127.0.0.2": { weight: 1 } }, "other-api": { "127.0.0.3": { weight: 1 } } }),
    );
    const size = JSON.stringify({ version: "0.1", servers }, null, 2).length;
    expect(size).toBeGreaterThan(WORKER_MIN_BYTES);

    const lb = await startController({ stateDir: join(dir, "state"), services, args: ["--backends", backends] });
    await lb.waitFor(/nginx started|config applied/);
    const read = lb.lines.find((l) => l.msg === "services.json read");
    expect(read?.["thread"]).toBe("worker");
    const backend = async (i: number) => {
      const r = await get(`http://127.0.0.1:${port}/`, { host: `s${i}.large.test` });
      return r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`;
    };
    for (const i of [0, 1, SITES / 2, SITES - 1]) expect(await backend(i)).toBe("127.0.0.2");

    // One site moves to another backend: read incrementally from the worker's read.
    servers[SITES / 2] = site(SITES / 2, "other");
    await writeServices(services, servers);
    await eventually(
      async () => (await backend(SITES / 2)) === "127.0.0.3",
      20_000,
      "the edited site served by its new backend",
    );
    for (const i of [0, SITES - 1]) expect(await backend(i)).toBe("127.0.0.2");
    await lb.stop();
  }, 120_000);
});
