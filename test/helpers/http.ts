/**
 * A small HTTP(S) client for tests: sets the Host header (and SNI for https) independently of the address dialled,
 * so one nginx on 127.0.0.1 can be asked for any site.
 *
 *   const r = await get(`http://127.0.0.1:${port}/api?x=1`, { host: "demo.example.com" });
 *   r.status; r.body; r.json<Echo>();
 *   await get(`https://127.0.0.1:${tlsPort}/`, { host: "demo.example.com", ca });   // SNI = host
 *   await alpn("127.0.0.1", tlsPort, "demo.example.com");                            // "h2" | "http/1.1" | false
 *   await h2get(`https://127.0.0.1:${tlsPort}/`, { host: "demo.example.com" });       // a real HTTP/2 request
 *
 * The balancer tests' short forms, on the same client: `hostGet(port, host, path)` (status, body, content type),
 * `tally(port, host, n)` (who answered n requests) and `postRaw(port, body, path, host, token)` (a hand-made push).
 * `rawGet(port, target, host)` sends a request line exactly as given on a connection of its own and gives back every
 * byte of the answer (`rawExchange` for any request text).
 */
import http, { type IncomingHttpHeaders } from "node:http";
import http2 from "node:http2";
import { connect } from "node:net";
import https from "node:https";
import tls from "node:tls";
import { ENDPOINTS_PATH } from "../../src/render/dynamic.js";

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly httpVersion: string;
  json<T = unknown>(): T;
}

export interface GetOptions {
  /** Host header, and the TLS server name for https. Default: the URL's host. */
  readonly host?: string;
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  /** CA certificate PEM to verify the server with; without it the certificate is not verified. */
  readonly ca?: string;
  /** SNI to send when it must differ from `host`. */
  readonly servername?: string;
  /** An agent, e.g. a keepalive one; default: a new connection per request. */
  readonly agent?: http.Agent;
  readonly timeoutMs?: number;
}

function reply(status: number, headers: IncomingHttpHeaders, body: string, httpVersion: string): Reply {
  return { status, headers, body, httpVersion, json: <T>() => JSON.parse(body) as T };
}

/** One request; resolves with the whole response, rejects on connection errors and after `timeoutMs` (5 s). */
export function get(url: string, options: GetOptions = {}): Promise<Reply> {
  const u = new URL(url);
  const isTls = u.protocol === "https:";
  const host = options.host ?? u.host;
  const servername = options.servername ?? host.replace(/:\d+$/, "");
  return new Promise((resolve, reject) => {
    const req = (isTls ? https : http).request(
      {
        host: u.hostname.replace(/^\[|\]$/g, ""),
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method: options.method ?? "GET",
        headers: { ...options.headers, host },
        agent: options.agent ?? false,
        ...(isTls
          ? {
              servername,
              ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
            }
          : {}),
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve(reply(res.statusCode ?? 0, res.headers, body, res.httpVersion)));
        res.on("error", reject);
      },
    );
    req.setTimeout(options.timeoutMs ?? 5_000, () => req.destroy(new Error(`timeout: ${url} (Host ${host})`)));
    req.on("error", reject);
    req.end(options.body);
  });
}

/** The application protocol the server picks from `h2, http/1.1` during the handshake (false when none). */
export function alpn(ip: string, port: number, servername: string): Promise<string | false> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: ip, port, servername, ALPNProtocols: ["h2", "http/1.1"], rejectUnauthorized: false });
    s.setTimeout(5_000, () => s.destroy(new Error("alpn: timeout")));
    s.once("secureConnect", () => {
      const p = s.alpnProtocol ?? false;
      s.end();
      resolve(p);
    });
    s.once("error", reject);
  });
}

/** One HTTP/2 request over TLS (`:authority` = host, SNI = host); the certificate is not verified. */
export function h2get(url: string, options: { host: string; timeoutMs?: number }): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${u.host}`, {
      servername: options.host.replace(/:\d+$/, ""),
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => session.destroy(new Error(`h2 timeout: ${url}`)), options.timeoutMs ?? 5_000);
    session.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    const req = session.request({ ":path": `${u.pathname}${u.search}`, ":authority": options.host });
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let body = "";
    req.setEncoding("utf8");
    req.on("response", (h) => {
      status = Number(h[":status"]);
      headers = h as IncomingHttpHeaders;
    });
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      clearTimeout(timer);
      session.close();
      resolve(reply(status, headers, body, "2.0"));
    });
    req.on("error", reject);
    req.end();
  });
}

/** A GET to 127.0.0.1:`port` with a Host header, as status, body and content type (compared whole by the tests). */
export async function hostGet(
  port: number,
  host: string,
  path = "/",
  agent?: http.Agent,
): Promise<{ status: number; body: string; contentType: string }> {
  const r = await get(`http://127.0.0.1:${port}${path}`, { host, timeoutMs: 10_000, ...(agent ? { agent } : {}) });
  return { status: r.status, body: r.body, contentType: String(r.headers["content-type"]) };
}

/** Counts the answers to `n` sequential GETs: the body for a 200, else `<status> <body>`. */
export async function tally(port: number, host: string, n: number, agent?: http.Agent): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await hostGet(port, host, "/", agent);
    const key = r.status === 200 ? r.body : `${r.status} ${r.body}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/**
 * A POST of raw bytes (by default to the control server's push endpoint), with the push token when given, for the
 * tests of what nginx refuses.
 */
export async function postRaw(
  port: number,
  body: Buffer | string,
  path = ENDPOINTS_PATH,
  host = "127.0.0.1",
  token?: string,
): Promise<{ status: number; body: string }> {
  const data = typeof body === "string" ? Buffer.from(body) : body;
  const r = await get(`http://127.0.0.1:${port}${path}`, {
    host,
    method: "POST",
    body: data,
    headers: { ...(token !== undefined ? { "x-nginx-lb-token": token } : {}), "content-length": String(data.length) },
    timeoutMs: 10_000,
  });
  return { status: r.status, body: r.body };
}

/** Writes `request` as it is on a new connection to 127.0.0.1:port and resolves with every byte read until nginx closes. */
export function rawExchange(port: number, request: Buffer | string, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, "127.0.0.1", () => socket.write(request));
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
  });
}

/** One HTTP/1.1 GET with the request target exactly as given (Connection: close): the whole answer, head and body. */
export function rawGet(port: number, target: string, host: string, timeoutMs = 5_000): Promise<Buffer> {
  return rawExchange(port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, timeoutMs);
}
