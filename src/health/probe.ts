import { request } from "node:http";
import { connect } from "node:net";
import type { HealthCheck } from "../model/services.js";
import type { ProbeResult } from "./state.js";

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

/**
 * One probe of one endpoint (never rejects): a TCP connect, or an HTTP/1.1 GET of the check's path whose status must be
 * in `expect`. The whole probe, connect included, must end within the check's timeout. No keep-alive: each probe
 * opens its own connection, so a listener that stops accepting fails the next probe.
 */
export function probe(ip: string, port: number, check: HealthCheck): Promise<ProbeResult> {
  return new Promise<ProbeResult>((resolve) => {
    let done = false;
    let cleanup = () => undefined as void;
    const finish = (r: ProbeResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      cleanup();
      resolve(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, reason: `timed out after ${check.timeoutMs}ms` }),
      check.timeoutMs,
    );
    if (check.type === "tcp") {
      const socket = connect({ host: ip, port });
      cleanup = () => void socket.destroy();
      socket.once("connect", () => finish({ ok: true, reason: "connection opened" }));
      socket.once("error", (e) => finish({ ok: false, reason: socketReason(e) }));
      return;
    }
    const req = request({
      host: ip,
      port,
      path: check.path,
      method: "GET",
      headers: { host: PROBE_HOST, "user-agent": "nginx-lb-health", connection: "close" },
      agent: false,
    });
    cleanup = () => void req.destroy();
    req.once("response", (res) => {
      const status = res.statusCode ?? 0;
      // The body is not read: drop it so the socket closes.
      res.resume();
      const expect = check.expect.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`)).join(",");
      finish(
        inRange(status, check.expect)
          ? { ok: true, reason: `status ${status}` }
          : { ok: false, reason: `status ${status} (expected ${expect})` },
      );
    });
    req.once("error", (e) => finish({ ok: false, reason: socketReason(e) }));
    req.end();
  });
}
