/**
 * Real HTTP backends on loopback addresses (127.0.0.2, 127.0.0.3, ...), all on one shared port, so one route's
 * upstream can list them as `<ip>:<port>`. Each answers JSON naming itself and what it received (or, with
 * `reply: "address"`, just its address as text, which the balancer tests count), and echoes websocket messages as
 * `<ip> <url> <message>`.
 *
 *   const pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
 *   pool.port;                           // the shared port
 *   pool.get("127.0.0.2").connections()  // TCP connections accepted so far (keepalive checks)
 *   await pool.get("127.0.0.2").stop(); await pool.get("127.0.0.2").start();
 *   await pool.close();
 *
 * Two paths serve large bodies (nginx's temp files): `GET /nginx-lb-test/bytes/<n>` answers n bytes of `bulkBytes(n)`,
 * and any request to `/nginx-lb-test/digest` answers `{ "bytes": n, "sha256": hex }` of the body it received.
 * `GET /nginx-lb-test/delay/<ms>` answers `delayed` after `ms` milliseconds (timed figures).
 *
 * The health-check path `/healthz` (any query) answers as `setCheck` says: `ok` (200, the default), `500`, `hang`
 * (accepts, never answers) or `flap` (200 and 500 by turns), and with `hang-all` no request at all is answered (a hung
 * endpoint), with `500-all` every request is answered 500; `checks()` counts the requests to the check path.
 */
import { createHash } from "node:crypto";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { Socket } from "node:net";
import { WebSocketServer } from "ws";

/** What an echo backend answers to every HTTP request. */
export interface Echo {
  readonly backend: string;
  readonly method: string;
  /** Path and query exactly as the backend received them. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

export interface Backend {
  readonly ip: string;
  readonly port: number;
  /** TCP connections accepted since start (not reset by stop/start). */
  connections(): number;
  /** HTTP requests answered since start. */
  requests(): number;
  readonly running: boolean;
  /** Closes the listener and every open connection, so the address refuses connections. */
  stop(): Promise<void>;
  /** Listens again on the same address and port. */
  start(): Promise<void>;
  /** `stop()`, for a backend that is not started again. */
  close(): Promise<void>;
  /** How `/healthz` answers from now on. */
  setCheck(mode: CheckMode): void;
  /** Requests to `/healthz` since start. */
  checks(): number;
}

/** How a backend answers its health-check path. */
export type CheckMode = "ok" | "500" | "hang" | "flap" | "hang-all" | "500-all";
export const CHECK_PATH = "/healthz";

export interface BackendPool {
  readonly port: number;
  readonly backends: Backend[];
  get(ip: string): Backend;
  close(): Promise<void>;
}

/** n deterministic, incompressible-looking bytes (no repeating block nginx or a test could mistake for another). */
export function bulkBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  let x = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** The large-body paths (see the header); false for every other request. */
function bulk(url: string, req: IncomingMessage, res: ServerResponse): boolean {
  const bytes = /^\/nginx-lb-test\/bytes\/(\d+)$/.exec(url);
  if (bytes) {
    req.resume();
    res.setHeader("content-type", "application/octet-stream");
    res.end(bulkBytes(Number(bytes[1])));
    return true;
  }
  const delay = /^\/nginx-lb-test\/delay\/(\d+)$/.exec(url);
  if (delay) {
    req.resume();
    setTimeout(() => res.end("delayed"), Number(delay[1]));
    return true;
  }
  if (url !== "/nginx-lb-test/digest") return false;
  const hash = createHash("sha256");
  let n = 0;
  req.on("data", (c: Buffer) => {
    n += c.length;
    hash.update(c);
  });
  req.on("end", () => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ bytes: n, sha256: hash.digest("hex") }));
  });
  return true;
}

export interface BackendOptions {
  /** `echo` (default): JSON naming the backend and what it received. `address`: the backend's address as text. */
  readonly reply?: "echo" | "address";
  /** Listen on this port (on every ip) instead of one the kernel picks; fails when it is taken. */
  readonly port?: number;
}

class EchoBackend implements Backend {
  private accepted = 0;
  private answered = 0;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private wss: WebSocketServer | null = null;
  private checkMode: CheckMode = "ok";
  private checked = 0;

  constructor(
    readonly ip: string,
    public port: number,
    private readonly reply: "echo" | "address",
  ) {}

  get running(): boolean {
    return this.server !== null;
  }

  connections(): number {
    return this.accepted;
  }

  requests(): number {
    return this.answered;
  }

  close(): Promise<void> {
    return this.stop();
  }

  setCheck(mode: CheckMode): void {
    this.checkMode = mode;
  }

  checks(): number {
    return this.checked;
  }

  /** Answers the health-check path; false for every other request. */
  private check(url: string, req: IncomingMessage, res: ServerResponse): boolean {
    if (url !== CHECK_PATH && !url.startsWith(`${CHECK_PATH}?`)) return false;
    this.checked++;
    req.resume();
    const mode = this.checkMode;
    if (mode === "hang" || mode === "hang-all") return true;
    const fail = mode === "500" || mode === "500-all" || (mode === "flap" && this.checked % 2 === 0);
    res.statusCode = fail ? 500 : 200;
    res.end(fail ? "unhealthy" : "ok");
    return true;
  }

  start(): Promise<void> {
    const server = createServer((req, res) => {
      this.answered++;
      if (bulk(req.url ?? "", req, res) || this.check(req.url ?? "", req, res)) return;
      if (this.checkMode === "hang-all") return;
      const echo: Echo = { backend: this.ip, method: req.method ?? "", url: req.url ?? "", headers: req.headers };
      // Drain the body so keepalive connections stay usable.
      req.resume();
      req.on("end", () => {
        res.setHeader("x-backend", this.ip);
        if (this.checkMode === "500-all") res.statusCode = 500;
        if (this.reply === "address") {
          res.setHeader("content-type", "text/plain");
          res.end(this.ip);
          return;
        }
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(echo));
      });
    });
    server.keepAliveTimeout = 120_000;
    server.on("connection", (s: Socket) => {
      this.accepted++;
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    const wss = new WebSocketServer({ server });
    wss.on("connection", (ws, req) => {
      ws.on("message", (data) => ws.send(`${this.ip} ${req.url ?? ""} ${String(data)}`));
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, this.ip, () => {
        server.off("error", reject);
        const addr = server.address();
        if (addr && typeof addr === "object") this.port = addr.port;
        this.server = server;
        this.wss = wss;
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    for (const c of this.wss?.clients ?? []) c.terminate();
    this.wss?.close();
    this.wss = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    server.closeAllConnections();
    await closed;
  }
}

/** The loopback addresses 127.0.0.<first> .. 127.0.0.<first+n-1>. */
export function loopbackIps(n: number, first = 2): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.0.${first + i}`);
}

/**
 * Starts one echo backend per ip, all on one port that is free on every ip. The port comes from the kernel for the
 * first ip; when another ip has it taken (another test run), everything is closed and a new port tried.
 */
export async function startBackends(ips: readonly string[], options: BackendOptions = {}): Promise<BackendPool> {
  if (ips.length === 0) throw new Error("startBackends needs at least one ip");
  const reply = options.reply ?? "echo";
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = new EchoBackend(ips[0] ?? "", options.port ?? 0, reply);
    await first.start();
    const all: EchoBackend[] = [first];
    try {
      for (const ip of ips.slice(1)) {
        const b = new EchoBackend(ip, first.port, reply);
        await b.start();
        all.push(b);
      }
    } catch (e) {
      await Promise.all(all.map((b) => b.stop()));
      if ((e as NodeJS.ErrnoException).code === "EADDRINUSE" && options.port === undefined) continue;
      throw e;
    }
    return {
      port: first.port,
      backends: all,
      get(ip: string): Backend {
        const b = all.find((x) => x.ip === ip);
        if (!b) throw new Error(`no backend on ${ip}`);
        return b;
      },
      async close() {
        await Promise.all(all.map((b) => b.stop()));
      },
    };
  }
  throw new Error(`no port free on all of ${ips.join(", ")} after 20 attempts`);
}

/** Backends that answer their bare address (`reply: "address"`): what the balancer tests tally. */
export function startAddressBackends(ips: readonly string[]): Promise<BackendPool> {
  return startBackends(ips, { reply: "address" });
}
