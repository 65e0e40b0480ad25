/**
 * A real `nginx-lb run` with its admin server on a free loopback port, over a backends file:
 *
 *   const lb = await startAdminLb({ pool, endpoints: { "web-api": { "127.0.0.2": { weight: 1 } } } });
 *   await lb.admin("/api/status");          // Reply from the admin server
 *   await lb.site("/x");                    // a request through nginx to the test site
 *   await lb.setEndpoints({ ... });         // rewrites the backends file (the registry)
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BackendPool } from "./backends.js";
import { eventually, startController, writeServices, type Controller } from "./controller.js";
import { get, type GetOptions, type Reply } from "./http.js";
import { freePorts, tempDir } from "./nginx.js";

export type Endpoints = Record<string, Record<string, { weight: number }>>;

export interface AdminLb {
  readonly lb: Controller;
  readonly dir: string;
  readonly sitePort: number;
  readonly adminPort: number;
  readonly adminUrl: string;
  readonly services: string;
  admin(path: string, options?: GetOptions): Promise<Reply>;
  site(path: string): Promise<Reply>;
  setEndpoints(e: Endpoints): Promise<void>;
}

export interface AdminLbOptions {
  readonly pool: BackendPool;
  readonly endpoints: Endpoints;
  /** Servers of services.json; default one site `a.test` on a free port with `/` -> web-api and `/api` -> api-api. */
  readonly servers?: (sitePort: number) => unknown[];
  /** Address the admin server binds (its port is chosen here); default 127.0.0.1. Reached through 127.0.0.1. */
  readonly adminHost?: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
}

/** The default test site: a root route, an API route with a backup, and a route whose backend has no endpoint. */
export const defaultServers = (pool: BackendPool) => (sitePort: number) => [
  {
    domain_name: "a.test",
    frontend_port: sitePort,
    routes: {
      "/": { app: "web", service: "api", port: pool.port },
      "/api": {
        app: "api",
        service: "api",
        port: pool.port,
        backup: { app: "spare", service: "api", port: pool.port },
      },
      "/gone": { app: "gone", service: "api", port: pool.port },
    },
  },
];

/** Starts the controller and waits until /readyz answers 200. */
export async function startAdminLb(o: AdminLbOptions): Promise<AdminLb> {
  const dir = await tempDir("nginx-lb-admin-");
  const [sitePort = 0, adminPort = 0] = await freePorts(2, o.adminHost ?? "127.0.0.1");
  const services = join(dir, "services.json");
  const backends = join(dir, "backends.json");
  await writeServices(services, (o.servers ?? defaultServers(o.pool))(sitePort));
  await writeFile(backends, JSON.stringify(o.endpoints));
  const lb = await startController({
    stateDir: join(dir, "state"),
    services,
    args: ["--backends", backends, "--admin-listen", `${o.adminHost ?? "127.0.0.1"}:${adminPort}`, ...(o.args ?? [])],
    ...(o.env ? { env: o.env } : {}),
  });
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const admin = (path: string, options?: GetOptions) => get(`${adminUrl}${path}`, options);
  await eventually(async () => (await admin("/readyz")).status === 200, 20_000, "/readyz 200");
  return {
    lb,
    dir,
    sitePort,
    adminPort,
    adminUrl,
    services,
    admin,
    site: (path) => get(`http://127.0.0.1:${sitePort}${path}`, { host: "a.test" }),
    setEndpoints: async (e) => {
      await writeFile(`${backends}.tmp`, JSON.stringify(e));
      const { rename } = await import("node:fs/promises");
      await rename(`${backends}.tmp`, backends);
    },
  };
}

/** The value of one Prometheus sample (`name{labels}` as printed, labels in any order), or null. */
export function sample(metrics: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of metrics.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return null;
}
