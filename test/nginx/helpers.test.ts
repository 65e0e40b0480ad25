import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderNginxConf } from "../../src/render/index.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, startNginx, tempDir } from "../helpers/nginx.js";

// The helpers other tests stand on: a reload really switches configs, a stop really ends nginx, a backend restart
// really comes back, and a failed start says why.
let pool: BackendPool;
beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
});
afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

const site = (port: number, ip: string) =>
  mustDesired(
    {
      servers: [
        { domain_name: "h.test", frontend_port: port, routes: { "/": { app: "a", service: "b", port: pool.port } } },
      ],
    },
    { "a-b": { [ip]: { weight: 1 } } },
  );

describe("nginx helper", () => {
  it("reload switches to the new config; stop ends the master and its workers", async () => {
    const [dir, port, port2] = [await tempDir(), await freePort(), await freePort()];
    const opts = { dir, listenHost: "127.0.0.1", workerProcesses: 1 as const };
    const ngx = await startNginx(renderNginxConf(site(port, "127.0.0.2"), opts), dir);
    expect((await get(`http://127.0.0.1:${port}/`, { host: "h.test" })).json<Echo>().backend).toBe("127.0.0.2");

    await ngx.reload(renderNginxConf(site(port2, "127.0.0.3"), opts));
    expect((await get(`http://127.0.0.1:${port2}/`, { host: "h.test" })).json<Echo>().backend).toBe("127.0.0.3");

    const pid = ngx.pid;
    await ngx.stop();
    expect(ngx.alive).toBe(false);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    await expect(get(`http://127.0.0.1:${port2}/`, { host: "h.test" })).rejects.toThrow(/ECONNREFUSED/);
  });

  it("a start on a taken port fails with nginx's own words and leaves nothing running", async () => {
    const blocker = createServer();
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, "127.0.0.1", () => resolve((blocker.address() as { port: number }).port)),
    );
    try {
      const dir = await tempDir();
      const conf = renderNginxConf(site(port, "127.0.0.2"), { dir, listenHost: "127.0.0.1", workerProcesses: 1 });
      await expect(startNginx(conf, dir)).rejects.toThrow(/Address already in use|bind\(\)/);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it("a stopped backend refuses connections and answers again after start", async () => {
    const b = pool.get("127.0.0.3");
    await b.stop();
    await expect(get(`http://127.0.0.3:${pool.port}/`)).rejects.toThrow(/ECONNREFUSED/);
    await b.start();
    expect((await get(`http://127.0.0.3:${pool.port}/q?x`)).json<Echo>()).toMatchObject({
      backend: "127.0.0.3",
      url: "/q?x",
    });
  });
});
