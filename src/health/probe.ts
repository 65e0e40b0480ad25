import { connect, type Socket } from "node:net";
import type { HealthCheck } from "../model/services.js";
import { CHECK_PATH_RE } from "../model/grammar.js";
import type { ProbeResult } from "./state.js";
import { STATUS_LINE_MAX, statusLine } from "./status-line.js";

/**
 * The Host header of every http probe. A probe goes to the endpoint's IP and port, not through nginx, and one probe
 * serves every route that shares the endpoint and check, so no route's domain would be the right one: a fixed name
 * an endpoint can recognise (and exempt from its virtual hosts) is honest about that.
 */
export const PROBE_HOST = "nginx-lb-health";

/** Why a socket error failed a probe, in the words an operator searches for. */
function socketReason(e: NodeJS.ErrnoException): string {
  if (e.code === "ECONNREFUSED") return "connection refused";
  if (e.code === "ECONNRESET") return "connection reset";
  if (e.code === "EHOSTUNREACH" || e.code === "ENETUNREACH") return "host unreachable";
  return e.code ? `${e.code.toLowerCase()}: ${e.message}` : e.message;
}

const inRange = (status: number, ranges: HealthCheck["expect"]) =>
  ranges.some(([lo, hi]) => status >= lo && status <= hi);

function statusResult(status: number, check: HealthCheck): ProbeResult {
  if (inRange(status, check.expect)) return { ok: true, reason: `status ${status}` };
  const expect = check.expect.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`)).join(",");
  return { ok: false, reason: `status ${status} (expected ${expect})` };
}

/**
 * The whole request of an http probe. The path passed CHECK_PATH_RE when the services were parsed; it is checked again
 * here because it goes into the request line as is, and a CR or LF there would split the request.
 */
function request(path: string): string | null {
  if (!CHECK_PATH_RE.test(path)) return null;
  return `GET ${path} HTTP/1.1\r\nHost: ${PROBE_HOST}\r\nUser-Agent: ${PROBE_HOST}\r\nConnection: close\r\n\r\n`;
}

/**
 * One probe of one endpoint (never rejects): a TCP connect, or an HTTP/1.1 GET of the check's path whose status must be
 * in `expect`. The whole probe, connect included, must end within the check's timeout. No keep-alive: each probe
 * opens its own connection, so a listener that stops accepting fails the next probe.
 *
 * The GET is written on a plain socket and only the status line is read, then the socket is destroyed: a probe at
 * thousands a second must not pay for an HTTP client's agent, parser and header objects to learn one number.
 */
export function probe(ip: string, port: number, check: HealthCheck): Promise<ProbeResult> {
  return new Promise<ProbeResult>((resolve) => {
    const req = check.type === "http" ? request(check.path) : "";
    if (req === null) {
      resolve({ ok: false, reason: `health check path is not a valid request path (a bug in nginx-lb)` });
      return;
    }
    let head = "";
    // Received bytes land in this probe's own small buffer (`onread`): no stream chunk objects for one line.
    const socket: Socket = connect({
      host: ip,
      port,
      noDelay: true,
      onread: {
        buffer: Buffer.allocUnsafe(STATUS_LINE_MAX + 2),
        callback: (n: number, buf: Uint8Array) => {
          head += Buffer.from(buf.buffer, buf.byteOffset, n).toString("latin1");
          const line = statusLine(head);
          if (line.kind === "status") finish(statusResult(line.status, check));
          else if (line.kind === "invalid") finish({ ok: false, reason: "not an HTTP answer" });
          return true;
        },
      },
    });
    const finish = (r: ProbeResult) => {
      if (timer === null) return;
      clearTimeout(timer);
      timer = null;
      socket.destroy();
      resolve(r);
    };
    let timer: NodeJS.Timeout | null = setTimeout(
      () => finish({ ok: false, reason: `timed out after ${check.timeoutMs}ms` }),
      check.timeoutMs,
    );
    socket.on("error", (e) => finish({ ok: false, reason: socketReason(e) }));
    if (check.type === "tcp") {
      socket.once("connect", () => finish({ ok: true, reason: "connection opened" }));
      return;
    }
    socket.write(req);
    socket.once("end", () => finish({ ok: false, reason: "connection closed before a status line" }));
  });
}
