/**
 * The image's entrypoint without Docker: the built CLI (`node bin/nginx-lb.js run`, as ENTRYPOINT runs it) as pid 1
 * of a new pid namespace, configured only by the environment the Dockerfile sets plus the original image's
 * HOST_IP + ETCD_PORT, serving an endpoint from a real etcd, and stopping cleanly on SIGTERM to pid 1.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { eventually, sleep, writeServices } from "../helpers/controller.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";

const ROOT = new URL("../..", import.meta.url).pathname;

/** The ENV instructions of the Dockerfile's final stage, as name -> value. */
function imageEnv(): Record<string, string> {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const final = text.slice(text.lastIndexOf("\nFROM "));
  const lines = final.split("\n").filter((l) => l.startsWith("ENV "));
  return Object.fromEntries(
    lines.flatMap((l) => [...l.matchAll(/([A-Za-z_]+)=(\S+)/g)]).map((m) => [m[1] ?? "", m[2] ?? ""]),
  );
}

let pool: BackendPool;
let etcd: EtcdServer;
beforeAll(async () => {
  // npm test builds dist/ first (tsc); a lone run of this file builds it here.
  if (!existsSync(join(ROOT, "dist/cli/main.js"))) execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT });
  [pool, etcd] = await Promise.all([startBackends(["127.0.0.6"]), startEtcd()]);
});
afterAll(async () => {
  await pool?.close();
  await etcd?.destroy();
  await cleanupNginx();
});

it("runs as pid 1 from the image's environment, reads etcd at HOST_IP:ETCD_PORT, stops on SIGTERM", async () => {
  const env = imageEnv();
  expect(env["NGINX_LB_SERVICES"]).toBe("/etc/csphere-services.json");
  const dir = await tempDir("nginx-lb-entrypoint-");
  const port = await freePort();
  const services = join(dir, "csphere-services.json");
  await writeServices(services, [
    { domain_name: "a.test", frontend_port: port, routes: { "/": { app: "img", service: "web", port: pool.port } } },
  ]);
  await etcd.ctl(["put", "/lb/backends/img-web/ips/127.0.0.6", '{"weight":1}']);
  const etcdUrl = new URL(etcd.endpoint);
  const child = spawn(
    "unshare",
    ["--pid", "--fork", "--mount-proc", process.execPath, join(ROOT, "bin/nginx-lb.js"), "run"],
    {
      cwd: dir,
      stdio: ["ignore", "ignore", "pipe"],
      env: {
        PATH: process.env["PATH"] ?? "/usr/bin:/bin",
        ...env,
        // Paths a test may write, instead of the image's /etc and /var/lib; everything else as the image sets it.
        NGINX_LB_SERVICES: services,
        NGINX_LB_STATE_DIR: join(dir, "state"),
        NGINX_LB_LISTEN_HOST: "127.0.0.1",
        NGINX_LB_WORKER_PROCESSES: "1",
        HOST_IP: etcdUrl.hostname,
        ETCD_PORT: etcdUrl.port,
      },
    },
  );
  let log = "";
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  try {
    await eventually(async () => log.includes("nginx-lb is running"), 30_000, "the daemon running");
    const inner = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim().split(/\s+/)[0]);
    const ns = (...args: string[]) =>
      execFileSync("nsenter", ["-t", String(inner), "-p", "-m", ...args], { encoding: "utf8" });
    expect(ns("sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")).toContain("bin/nginx-lb.js run");
    await eventually(
      async () => {
        const r = await get(`http://127.0.0.1:${port}/`, { host: "a.test", timeoutMs: 2000 });
        return r.status === 200 && r.json<Echo>().backend === "127.0.0.6";
      },
      20_000,
      "traffic to the endpoint from etcd",
    );
    ns("kill", "-TERM", "1");
    const code = await Promise.race([exited, sleep(20_000).then(() => "timeout")]);
    expect(code).toBe(0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (log.includes('"level":50')) console.error(log.slice(-2000));
  }
});
