/**
 * A standalone nginx the benchmark runs itself on configs nginx-lb never renders: the fast static backends, and
 * the original (confd-style) design's config for the data-plane comparison. Not a second launcher of nginx-lb's
 * config: nginx-lb itself is always the real `nginx-lb run` (lib/lb.ts), and the harness refuses nginx-lb's
 * configs here. Started through the test harness's standalone launcher (the production NginxProcess, own prefix,
 * waits until every listen address accepts) and stopped by the benchmark's cleanup.
 */
import { cleanupNginx, startStandaloneNginx, tempDir, type StandaloneNginx } from "../../test/helpers/nginx.js";
import { request } from "node:http";
import { freePort, onCleanup } from "./procs.js";

export { NGINX } from "../../test/helpers/nginx.js";

let registered = false;

/** Starts nginx on a config rendered for its own directory. */
export async function startStaticNginx(conf: (dir: string) => string): Promise<StandaloneNginx> {
  if (!registered) onCleanup(cleanupNginx);
  registered = true;
  const dir = await tempDir("nginx-lb-bench-nginx-");
  return startStandaloneNginx(conf(dir), dir);
}

/** The main-context head every standalone config shares: its own pid, logs and temp paths. */
export function head(dir: string, workers: number, connections = 8192): string {
  return [
    `worker_processes ${workers};`,
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/logs/error.log warn;`,
    `worker_rlimit_nofile 65536;`,
    `events { worker_connections ${connections}; }`,
  ].join("\n");
}

export function tempPaths(dir: string): string {
  return ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((t) => `    ${t}_temp_path ${dir}/tmp/${t};`)
    .join("\n");
}

/** Static backends: one nginx, one server per loopback ip, all on one shared port, each answering its own ip. */
export interface StaticBackends {
  readonly ips: readonly string[];
  readonly port: number;
  readonly nginx: StandaloneNginx;
  /** TCP connections the backends accepted so far (nginx's stub_status): how often a proxy reconnects. */
  accepted(): Promise<number>;
}

export async function startStaticBackends(ips: readonly string[], workers = 1): Promise<StaticBackends> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort(ips[0]);
    const statusPort = await freePort();
    const conf = (dir: string) =>
      [
        head(dir, workers),
        `http {`,
        `    access_log off;`,
        `    keepalive_requests 1000000;`,
        tempPaths(dir),
        ...ips.map(
          (ip) =>
            `    server { listen ${ip}:${port}; default_type text/plain; ` +
            `add_header X-Backend ${ip}; return 200 "${ip}\\n"; }`,
        ),
        `    server { listen 127.0.0.1:${statusPort}; location / { stub_status; } }`,
        `}`,
      ].join("\n");
    try {
      const nginx = await startStaticNginx(conf);
      const accepted = async () => {
        const r = await probeText(statusPort);
        return Number(/^\s*(\d+) \d+ \d+/m.exec(r)?.[1] ?? NaN);
      };
      return { ips, port, nginx, accepted };
    } catch (e) {
      // Another run may hold the port on one of the other ips: try a fresh one.
      if (attempt >= 9 || !/in use|not listening/.test((e as Error).message)) throw e;
    }
  }
}

/** Static listeners on every ip x port (one nginx, one worker): many distinct endpoints that answer 200 to anything. */
export interface Listeners {
  readonly ips: readonly string[];
  readonly ports: readonly number[];
  readonly nginx: StandaloneNginx;
  /** TCP connections accepted so far, over every listener. */
  accepted(): Promise<number>;
}

/**
 * Starts nginx listening on `count` consecutive ports from `firstPort` on each ip. The ports come from below the
 * kernel's ephemeral range (32768 up), where no other run's kernel-chosen port lands; when one is taken anyway, the
 * next block of ports is tried.
 */
export async function startListeners(ips: readonly string[], count: number, firstPort = 21_000): Promise<Listeners> {
  for (let attempt = 0; ; attempt++) {
    const base = firstPort + attempt * count;
    const ports = Array.from({ length: count }, (_, i) => base + i);
    const statusPort = await freePort();
    const conf = (dir: string) =>
      [
        // nginx wants a connection slot per listening socket, and then some for the probes.
        head(dir, 1, ips.length * count + 8192),
        `http {`,
        `    access_log off;`,
        tempPaths(dir),
        `    server {`,
        ...ips.flatMap((ip) => ports.map((p) => `        listen ${ip}:${p};`)),
        `        default_type text/plain;`,
        `        return 200 "ok\\n";`,
        `    }`,
        `    server { listen 127.0.0.1:${statusPort}; location / { stub_status; } }`,
        `}`,
      ].join("\n");
    try {
      const nginx = await startStaticNginx(conf);
      const accepted = async () => Number(/^\s*(\d+) \d+ \d+/m.exec(await probeText(statusPort))?.[1] ?? NaN);
      return { ips, ports, nginx, accepted };
    } catch (e) {
      if (attempt >= 4 || !/in use|not listening/.test((e as Error).message)) throw e;
    }
  }
}

function probeText(port: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve(body));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(""));
    req.end();
  });
}
