import { Table } from "../../src/model/table.js";
import { readdir, readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeSets } from "../../src/nginx/push-format.js";
import { renderNginxConf } from "../../src/render/index.js";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get, postRaw } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, serveNginx, startStandaloneNginx, tempDir } from "../helpers/nginx.js";

// The helpers other tests stand on: a reload really switches configs, a stop really ends nginx, cleanup leaves no
// nginx behind (they run in their own process group, as in production), a backend restart really comes back, and a
// failed start says why.
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

/** True while the process runs (a zombie counts as gone). */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
}

/** Pids of the live processes whose command line names `text`. */
async function processesNaming(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.includes(text) && (await running(Number(pid)))) out.push(Number(pid));
  }
  return out;
}

describe("nginx helper", () => {
  it("an applied change switches to the new config; stop ends the master and its workers", async () => {
    const [port, port2] = [await freePort(), await freePort()];
    const ngx = await serveNginx({ ...site(port, "127.0.0.2"), workers: 1 });
    expect((await get(`http://127.0.0.1:${port}/`, { host: "h.test" })).json<Echo>().backend).toBe("127.0.0.2");

    const out = await ngx.apply(site(port2, "127.0.0.3"));
    expect(out.action).toBe("reload");
    expect((await get(`http://127.0.0.1:${port2}/`, { host: "h.test" })).json<Echo>().backend).toBe("127.0.0.3");

    const pids = [ngx.masterPid, ...(await ngx.workerPids())];
    expect(pids.length).toBeGreaterThanOrEqual(2);
    await ngx.stop();
    for (const pid of pids) expect(await running(pid), `pid ${pid}`).toBe(false);
    await expect(get(`http://127.0.0.1:${port2}/`, { host: "h.test" })).rejects.toThrow(/ECONNREFUSED/);
  });

  it("serves with the daemon's options: the push token is rendered, and a push without it is refused", async () => {
    const ngx = await serveNginx({ ...site(await freePort(), "127.0.0.2"), mode: "dynamic" });
    expect(ngx.pushToken).toMatch(/^[0-9a-f]{32}$/);
    const conf = await readFile(join(ngx.dir, "nginx.conf"), "utf8");
    expect(conf).toContain(ngx.pushToken);
    expect(conf).toContain(`pid ${join(ngx.dir, "nginx.pid")};`);
    expect(conf).toContain(`127.0.0.1:${ngx.controlPort}`);
    const body = encodeSets(5, Table.of({}));
    expect((await postRaw(ngx.controlPort, body)).status).toBe(401);
    expect(await postRaw(ngx.controlPort, body, undefined, undefined, ngx.pushToken)).toMatchObject({ status: 200 });
  });

  it("a start on a taken port fails with nginx's own words and leaves nothing running", async () => {
    const blocker = createServer();
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, "127.0.0.1", () => resolve((blocker.address() as { port: number }).port)),
    );
    try {
      const dir = await tempDir();
      await expect(serveNginx({ ...site(port, "127.0.0.2"), workers: 1, dir })).rejects.toThrow(
        /Address already in use|bind\(\)/,
      );
      expect(await processesNaming(dir)).toEqual([]);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it("cleanupNginx stops every nginx the file started, though each runs in its own process group", async () => {
    const served = await serveNginx({ ...site(await freePort(), "127.0.0.2"), workers: 2 });
    const dir = await tempDir();
    const standalone = await startStandaloneNginx(
      [
        `pid ${dir}/nginx.pid;`,
        `events {}`,
        `http { server { listen 127.0.0.1:${await freePort()}; return 200 "standalone\\n"; } }`,
      ].join("\n"),
      dir,
    );
    const pids = [served.masterPid, ...(await served.workerPids()), standalone.pid];
    for (const pid of pids) expect(await running(pid), `pid ${pid}`).toBe(true);
    await cleanupNginx();
    for (const pid of pids) expect(await running(pid), `pid ${pid}`).toBe(false);
    expect(await processesNaming(served.dir)).toEqual([]);
    expect(await processesNaming(dir)).toEqual([]);
  });

  it("the standalone launcher refuses nginx-lb's own configs: those are served with the daemon's options", async () => {
    const dir = await tempDir();
    const conf = renderNginxConf(site(await freePort(), "127.0.0.2"), { dir, listenHost: "127.0.0.1" }).conf;
    await expect(startStandaloneNginx(conf, dir)).rejects.toThrow(/serveNginx/);
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
