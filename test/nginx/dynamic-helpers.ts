import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { Agent, createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import type { BackendSet } from "../../src/model/backends.js";
import { parseServices, type Services } from "../../src/model/services.js";
import { findNginx } from "../../src/nginx/binary.js";
import { pushBody, pushEndpoints, type PushTarget } from "../../src/nginx/endpoints-push.js";
import { writeRendered } from "../../src/nginx/files.js";
import { workerPids as masterWorkerPids } from "../../src/nginx/process.js";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { bindRoutes, renderNginxConf } from "../../src/render/index.js";
import { freePort } from "../helpers/nginx.js";
import { waitFor } from "../helpers/wait.js";

export { waitFor } from "../helpers/wait.js";

/** One HTTP backend on a loopback address: answers its own address; websockets echo `<ip> <message>`. */
export interface Backend {
  readonly ip: string;
  readonly port: number;
  /** TCP connections accepted so far (upstream keepalive keeps this low). */
  connections(): number;
  close(): Promise<void>;
}

function listen(server: Server, ip: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, ip, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Starts a backend on ip:port (port 0: any). */
export async function startBackend(ip: string, port: number): Promise<Backend> {
  const server = createServer((req, res) => {
    req.resume();
    res.setHeader("content-type", "text/plain");
    res.end(ip);
  });
  server.keepAliveTimeout = 30_000;
  let connections = 0;
  server.on("connection", () => connections++);
  const wss = new WebSocketServer({ server });
  wss.on("connection", (ws) => ws.on("message", (m) => ws.send(`${ip} ${String(m)}`)));
  await listen(server, ip, port);
  const addr = server.address();
  const bound = typeof addr === "object" && addr ? addr.port : port;
  return {
    ip,
    port: bound,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Backends on several loopback addresses sharing one port (a route has one port for all its endpoints). */
export async function startBackends(ips: readonly string[]): Promise<{ port: number; backends: Backend[] }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freePort(ips[0]);
    const started: Backend[] = [];
    try {
      for (const ip of ips) started.push(await startBackend(ip, port));
      return { port, backends: started };
    } catch {
      await Promise.all(started.map((b) => b.close()));
    }
  }
  throw new Error(`no port free on all of ${ips.join(", ")}`);
}

/** A GET through nginx with a Host header; resolves with status and body, never rejects on HTTP errors. */
export function get(
  port: number,
  host: string,
  path = "/",
  agent?: Agent,
): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers: { host }, agent: agent ?? false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers["content-type"]) }),
      );
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    req.end();
  });
}

/** A raw request to the control server's push endpoint (with the push token when given), for the rejection tests. */
export function postRaw(
  port: number,
  body: Buffer | string,
  path = "/nginx-lb/endpoints",
  host = "127.0.0.1",
  token?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = typeof body === "string" ? Buffer.from(body) : body;
    const headers = { host, "content-length": data.length, ...(token ? { "x-nginx-lb-token": token } : {}) };
    const req = request({ host: "127.0.0.1", port, path, method: "POST", agent: false, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    req.end(data);
  });
}

export interface Route {
  readonly prefix: string;
  readonly app: string;
  readonly service: string;
  readonly port: number;
  readonly backup?: { app: string; service: string; port: number };
}

/** A validated services model of one domain with the given routes. */
export function services(domain: string, frontendPort: number, routes: readonly Route[]): Services {
  const raw = {
    version: "0.1",
    servers: [
      {
        domain_name: domain,
        frontend_port: frontendPort,
        routes: Object.fromEntries(
          routes.map((r) => [r.prefix, { app: r.app, service: r.service, port: r.port, backup: r.backup }]),
        ),
      },
    ],
  };
  const parsed = parseServices(JSON.parse(JSON.stringify(raw)));
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.value;
}

/** A real nginx in a temporary prefix, in either endpoints mode. */
export interface Nginx {
  readonly dir: string;
  readonly port: number;
  readonly controlPort: number;
  /** Where and with which token to push (dynamic mode; the token is random unless one was asked for). */
  readonly target: PushTarget;
  readonly masterPid: number;
  workerPids(): Promise<number[]>;
  /** Pushes the sets of `backends` (dynamic mode); resolves with the version nginx stored. */
  push(backends: BackendSet): Promise<number>;
  /** Re-renders with `backends` and reloads (reload mode's way of changing endpoints). */
  reload(backends?: BackendSet): Promise<void>;
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

/** True while the process runs; a zombie counts as gone (nginx daemonises, and pid 1 may reap it late). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Renders, starts nginx and waits until it answers on its control port. */
export async function startNginx(opts: {
  mode: "reload" | "dynamic";
  services: (frontendPort: number) => Services;
  backends: BackendSet;
  workers?: number;
  /** The push token to render (RenderOptions.pushToken); dynamic mode renders a random one by default. */
  pushToken?: string;
  /** Runs once the config is written, before nginx starts (e.g. to place the start-up endpoint sets in `dir`). */
  before?: (dir: string, model: Services) => Promise<void>;
}): Promise<Nginx> {
  const nginx = findNginx();
  const dir = await mkdtemp(join(tmpdir(), "nlb-dyn-"));
  const port = await freePort();
  const controlPort = await freePort();
  const model = opts.services(port);
  const pushToken = opts.pushToken ?? (opts.mode === "dynamic" ? randomBytes(16).toString("hex") : undefined);
  const target: PushTarget = { port: controlPort, ...(pushToken ? { token: pushToken } : {}) };
  let version = 0;
  const render = (backends: BackendSet) =>
    renderNginxConf(
      { services: model, backends },
      {
        dir,
        controlPort,
        listenHost: "127.0.0.1",
        workerProcesses: opts.workers ?? 2,
        endpointsMode: opts.mode,
        ...(opts.mode === "dynamic" ? { luaSource: balancerLuaSource() } : {}),
        ...(pushToken ? { pushToken } : {}),
      },
    );
  const conf = await writeRendered(dir, render(opts.backends));
  await opts.before?.(dir, model);
  const args = ["-p", `${dir}/`, "-c", conf, "-e", `${dir}/logs/error.log`];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(nginx, args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`nginx exited ${code}: ${err}`))));
  });
  const masterPid = await waitFor("nginx pid file", async () => {
    const n = Number((await readFile(join(dir, "nginx.pid"), "utf8")).trim());
    return n > 0 ? n : undefined;
  });
  const generation = async () => (await get(controlPort, "localhost", "/nginx-lb/generation")).body;
  await waitFor("nginx control port", async () => ((await generation()).length > 0 ? true : undefined));
  const workerPids = () => masterWorkerPids(masterPid);
  const self: Nginx = {
    dir,
    port,
    controlPort,
    target,
    masterPid,
    workerPids,
    push: (backends) => pushEndpoints(target, pushBody(++version, bindRoutes(model, backends))),
    async reload(backends = opts.backends) {
      const rendered = render(backends);
      await writeRendered(dir, rendered);
      const before = await workerPids();
      await run(nginx, [...args, "-s", "reload"]);
      await waitFor("the new generation", async () =>
        (await generation()) === rendered.generation ? true : undefined,
      );
      // Old workers drain and exit; wait so tests count only the new ones.
      await waitFor("old workers to exit", async () => (before.some(alive) ? undefined : true));
    },
    errorLog: () => readFile(join(dir, "logs/error.log"), "utf8").catch(() => ""),
    async stop() {
      if (alive(masterPid)) process.kill(masterPid, "SIGTERM");
      await waitFor("nginx to exit", async () => (alive(masterPid) ? undefined : true)).catch(() => {
        if (alive(masterPid)) process.kill(masterPid, "SIGKILL");
      });
      await rm(dir, { recursive: true, force: true });
    },
  };
  return self;
}

/** Counts the bodies of `n` sequential GETs. */
export async function tally(port: number, host: string, n: number, agent?: Agent): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await get(port, host, "/", agent);
    const key = r.status === 200 ? r.body : `${r.status} ${r.body}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
