/**
 * SIGTERM with etcd unreachable: the real `nginx-lb run`, pointed at an etcd that is stopped or frozen (v3 and v2 API), exits
 * within a bound whatever the registry does; the bound leaves room for nginx to drain (no open connections here).
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

/** The source's own stop is bounded at about a second; the rest is nginx's graceful quit and process exit. */
const EXIT_BOUND_MS = 3_000;

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd({ v2: true });
});
afterAll(async () => {
  await stopAllControllers();
  await etcd?.destroy();
  await cleanupNginx();
});

describe.each(["v3", "v2"] as const)("SIGTERM with etcd down (%s API)", (api) => {
  it.each(["reachable at start, then stopped", "down from the start", "reachable at start, then frozen"] as const)(
    "etcd %s: the controller exits within the bound",
    async (when) => {
      const dir = await tempDir("nginx-lb-shutdown-");
      const port = await freePort();
      const services = join(dir, "services.json");
      await writeServices(services, [
        { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "web", service: "api", port: 8080 } } },
      ]);
      const prefix = `/shutdown/${api}/${when.replace(/[^a-z]+/g, "-")}`;
      if (api === "v3") await etcd.ctl(["put", `${prefix}/web-api/ips/127.0.0.2`, '{"weight":1}']);
      else await etcd.ctl(["set", `${prefix}/web-api/ips/127.0.0.2`, '{"weight":1}'], { api: 2 });
      if (when === "down from the start") await etcd.stop();
      const lb = await startController({
        stateDir: join(dir, "state"),
        services,
        args: ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--etcd-api", api],
      });
      try {
        if (when === "reachable at start, then stopped") {
          await lb.waitFor(/"connected":true|etcd (revision|index)/);
          await etcd.stop();
        }
        if (when === "reachable at start, then frozen") {
          await lb.waitFor(/"connected":true|etcd (revision|index)/);
          // SIGSTOP: the watch stays open and nothing answers; the controller has no error to see.
          etcd.pause();
        } else {
          // Let the source reach its retry loop: a request in flight, a backoff sleep, or the client reconnecting.
          await lb.waitFor(/serving the last known endpoints/, 20_000);
        }
        await new Promise((r) => setTimeout(r, 1_500));
        const t0 = Date.now();
        lb.signal("SIGTERM");
        const code = await Promise.race([
          lb.exited,
          new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 20_000)),
        ]);
        const ms = Date.now() - t0;
        console.log(`etcd ${api}, ${when}: SIGTERM -> exit ${String(code)} in ${ms} ms (bound ${EXIT_BOUND_MS} ms)`);
        expect(code).toBe(0);
        expect(ms).toBeLessThan(EXIT_BOUND_MS);
        expect(lb.find(/stopping/).length).toBeGreaterThan(0);
      } finally {
        await lb.stop();
        if (when === "reachable at start, then frozen") etcd.resume();
        else await etcd.start();
      }
    },
  );
});
