/** wrk, the load generator, in its own process: bounded by duration and by a hard timeout. */
import { execFile } from "node:child_process";

export interface WrkResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50ms: number;
  readonly p99ms: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers: what a client saw as failed. */
  readonly failed: number;
  readonly errors: { connect: number; read: number; write: number; timeout: number; non2xx: number };
}

/** wrk's latency units (us, ms, s) to milliseconds. */
function ms(value: string, unit: string): number {
  const v = Number(value);
  return unit === "us" ? v / 1000 : unit === "s" ? v * 1000 : unit === "m" ? v * 60_000 : v;
}

export function parseWrk(out: string): WrkResult {
  const lat = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out);
    return m ? ms(m[1] ?? "", m[2] ?? "") : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = {
    connect: Number(sock?.[1] ?? 0),
    read: Number(sock?.[2] ?? 0),
    write: Number(sock?.[3] ?? 0),
    timeout: Number(sock?.[4] ?? 0),
    non2xx,
  };
  return {
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN),
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50ms: lat("50"),
    p99ms: lat("99"),
    failed: errors.connect + errors.read + errors.write + errors.timeout + non2xx,
    errors,
  };
}

export interface WrkOptions {
  readonly url: string;
  readonly host?: string;
  readonly seconds: number;
  readonly connections: number;
  readonly threads: number;
}

export function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = [
    `-t${o.threads}`,
    `-c${o.connections}`,
    `-d${o.seconds}s`,
    "--latency",
    "--timeout",
    "2s",
    ...(o.host ? ["-H", `Host: ${o.host}`] : []),
    o.url,
  ];
  return new Promise((resolve, reject) => {
    execFile("wrk", args, { timeout: (o.seconds + 20) * 1000, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`wrk failed: ${err.message} ${stderr}`));
      else resolve(parseWrk(stdout));
    });
  });
}
