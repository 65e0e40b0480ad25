/**
 * etcd faults under the real `nginx-lb run`, in both endpoint modes, judged by what a client sees through nginx:
 * - etcd restored from an older snapshot at the same URL: within a bound, the set nginx serves is the restored
 *   registry (an endpoint added after the snapshot stops serving, one deleted after it serves again);
 * - etcd restarted during a bounded load loop: no request fails, and afterwards the served set equals the registry.
 */
import { Agent } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";
import { get } from "../helpers/http.js";
import { served } from "../helpers/served.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

/** How long after etcd answers again the served set must equal the registry. */
const CONVERGE_MS = 15_000;
/** The load loop's bounds. */
const LOAD_MAX_REQUESTS = 2_000;
const LOAD_MAX_MS = 20_000;

let pool: BackendPool;
let etcd: EtcdServer;
beforeAll(async () => {
  [pool, etcd] = await Promise.all([startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]), startEtcd()]);
});
afterAll(async () => {
  await stopAllControllers();
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

const w = JSON.stringify({ weight: 1 });

/** The endpoint ips the registry holds under `prefix` for app `web`, service `api`, sorted. */
async function registry(prefix: string): Promise<string[]> {
  const r = await etcd.ctl(["get", `${prefix}/web-api/ips/`, "--prefix", "--keys-only"]);
  return r.stdout
    .split("\n")
    .filter(Boolean)
    .map((k) => k.slice(k.lastIndexOf("/") + 1))
    .sort();
}

async function daemon(mode: "reload" | "dynamic", prefix: string) {
  const dir = await tempDir("nginx-lb-fault-etcd-");
  const port = await freePort();
  const services = join(dir, "services.json");
  await writeServices(services, [
    { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: pool.port } } },
  ]);
  const lb = await startController({
    stateDir: join(dir, "state"),
    services,
    args: ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--endpoints-mode", mode],
  });
  return { lb, url: `http://127.0.0.1:${port}/` };
}

describe.each(["reload", "dynamic"] as const)("etcd faults under nginx-lb run (%s endpoints)", (mode) => {
  it("etcd restored from an older snapshot: the served set becomes the restored registry", async () => {
    const prefix = `/faults/${mode}/restore`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w]);
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.3`, w]);
    const snap = await etcd.snapshot();
    const { lb, url } = await daemon(mode, prefix);
    // After the snapshot: one endpoint added, one deleted, and more writes so the revision is well past it.
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.4`, w]);
    await etcd.ctl(["del", `${prefix}/web-api/ips/127.0.0.2`]);
    for (let i = 0; i < 5; i++) await etcd.ctl(["put", `/faults/${mode}/bump`, String(i)]);
    await waitFor(
      "the changes after the snapshot served",
      async () => (await served(url)).join() === "127.0.0.3,127.0.0.4",
    );

    await etcd.restore(snap);
    const t0 = Date.now();
    const expected = await registry(prefix);
    expect(expected).toEqual(["127.0.0.2", "127.0.0.3"]);
    await waitFor(
      "the restored registry served",
      async () => (await served(url)).join() === expected.join(),
      CONVERGE_MS,
    );
    console.log(`${mode}: served set equals the restored registry ${Date.now() - t0} ms after etcd answered`);
    expect(lb.find(/went back from .* listing afresh/).length).toBeGreaterThan(0);

    // And it follows the restored etcd from there.
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.5`, w]);
    await waitFor(
      "a write after the restore served",
      async () => (await served(url)).join() === (await registry(prefix)).join(),
    );
    await lb.stop();
  });

  it("etcd restarted during a bounded load loop: no request fails, the served set equals the registry after", async () => {
    const prefix = `/faults/${mode}/restart-load`;
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, w]);
    await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.3`, w]);
    const { lb, url } = await daemon(mode, prefix);
    await waitFor("both endpoints served", async () => (await served(url)).join() === "127.0.0.2,127.0.0.3");

    // Reload mode reloads nginx for the change below, and an old worker closes its idle keepalive connections as it
    // retires: a client reusing one at that instant sees "socket hang up" (a retry-safe race every nginx reload has,
    // which dynamic mode exists to avoid). So reload mode's clients open a connection per request; dynamic mode's
    // reuse theirs, since no reload happens there.
    const agent = new Agent({ keepAlive: mode === "dynamic", maxSockets: 4 });
    let sent = 0;
    const failures: string[] = [];
    let stopLoad = false;
    const started = Date.now();
    const load = (async () => {
      while (!stopLoad && sent < LOAD_MAX_REQUESTS && Date.now() - started < LOAD_MAX_MS) {
        sent++;
        const r = await get(url, { host: "a.test", agent, timeoutMs: 3_000 }).catch((e: Error) => e);
        if (r instanceof Error) failures.push(r.message);
        else if (r.status !== 200) failures.push(`status ${r.status}`);
      }
    })();
    try {
      await waitFor("some load", () => sent >= 50);
      await etcd.stop();
      await lb.waitFor(/etcd at .*serving the last known endpoints/);
      await waitFor("load while etcd is down", () => sent >= 200 || Date.now() - started > LOAD_MAX_MS / 2);
      await etcd.start();
      // A change made after the restart reaches nginx while the load runs.
      await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.4`, w]);
      await etcd.ctl(["del", `${prefix}/web-api/ips/127.0.0.2`]);
      const expected = await registry(prefix);
      await waitFor(
        "the registry served after the restart",
        async () => (await served(url)).join() === expected.join(),
        CONVERGE_MS,
      );
    } finally {
      stopLoad = true;
      await load;
      agent.destroy();
    }
    console.log(`${mode}: ${sent} requests across the etcd restart, ${failures.length} failed`);
    expect(sent).toBeLessThanOrEqual(LOAD_MAX_REQUESTS);
    expect(failures).toEqual([]);
    await lb.stop();
  });
});
