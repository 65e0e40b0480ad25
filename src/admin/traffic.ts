import { constants, fstatSync, ftruncateSync } from "node:fs";
import { mkdir, open, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Counter, Histogram, type Registry } from "prom-client";
import type { Topology } from "../reconciler/topology.js";
import type { Logger } from "../shared/log.js";
import type { RouteCounts } from "./series.js";

/** One request as nginx reports it (the `nlb` log_format). */
export interface TrafficRecord {
  /** The route's upstream name; empty for requests no route matched (unknown host). */
  readonly route: string;
  readonly status: number;
  readonly requestSeconds: number;
  /** Time of the upstream that answered; null when nginx answered itself (503 without endpoints, no route). */
  readonly upstreamSeconds: number | null;
  readonly bytes: number;
}

const num = (v: unknown): number | null => {
  if (typeof v !== "string" || v === "" || v === "-") return null;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : null;
};

/** Parses one access record line from nginx (`{json}`); null when it is not a record we wrote. */
export function parseRecord(line: string): TrafficRecord | null {
  const start = line.indexOf("{");
  if (start < 0) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(line.slice(start));
  } catch {
    return null;
  }
  if (typeof raw !== "object" || raw === null) return null;
  const o = raw as Record<string, unknown>;
  const status = num(o["s"]);
  const requestSeconds = num(o["t"]);
  if (typeof o["r"] !== "string" || status === null || requestSeconds === null) return null;
  // With retries nginx lists every upstream tried ("0.001, 0.004"); the last one is the one that answered.
  const tried = typeof o["u"] === "string" ? o["u"].split(/[,:]/).map((s) => s.trim()) : [];
  return {
    route: o["r"],
    status,
    requestSeconds,
    upstreamSeconds: num(tried.at(-1)),
    bytes: num(o["b"]) ?? 0,
  };
}

/** Upper bounds (seconds) of the upstream response time histogram; +Inf comes after. */
export const LATENCY_BOUNDS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The histogram bucket an upstream time falls in (an index into a per-bucket count array, +Inf last). */
export function latencyBucket(seconds: number): number {
  const i = LATENCY_BOUNDS.findIndex((le) => seconds <= le);
  return i < 0 ? LATENCY_BOUNDS.length : i;
}

const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;
type StatusClass = (typeof CLASSES)[number];
const classOf = (status: number): StatusClass | null => CLASSES[Math.floor(status / 100) - 1] ?? null;

/** Running totals of one route, for request and error rates. */
export interface RouteTotals {
  readonly label: string;
  requests: number;
  errors: number;
  bytes: number;
  readonly byClass: Record<StatusClass, number>;
}

/**
 * Per-route (and, one upstream per route, per-upstream) traffic counters. Label sets are bounded by the current
 * model: a record naming a route the model does not have is counted once, unlabelled, as ignored.
 */
export class TrafficStats {
  private routes = new Map<string, RouteTotals>();
  /** Per route, upstream times counted per histogram bucket (the charts' quantiles come from their changes). */
  private latency = new Map<string, number[]>();
  private readonly requests: Counter<"route" | "upstream" | "class">;
  private readonly bytes: Counter<"route" | "upstream">;
  private readonly upstreamTime: Histogram<"route" | "upstream">;
  private readonly ignored: Counter<"reason">;

  constructor(metrics: Registry) {
    const registers = [metrics];
    this.requests = new Counter({
      name: "nginx_lb_route_requests_total",
      help: "Requests served per route (and its upstream), by status class",
      labelNames: ["route", "upstream", "class"],
      registers,
    });
    this.bytes = new Counter({
      name: "nginx_lb_route_response_bytes_total",
      help: "Bytes sent to clients per route (and its upstream)",
      labelNames: ["route", "upstream"],
      registers,
    });
    this.upstreamTime = new Histogram({
      name: "nginx_lb_route_upstream_response_seconds",
      help: "Upstream response time per route (and its upstream)",
      labelNames: ["route", "upstream"],
      buckets: [...LATENCY_BOUNDS],
      registers,
    });
    this.ignored = new Counter({
      name: "nginx_lb_traffic_records_ignored_total",
      help: "Access records not counted per route: no route matched, a route not in the current model, or malformed",
      labelNames: ["reason"],
      registers,
    });
  }

  /** Follows the model: new routes start at zero, removed routes lose their series (bounded label sets). */
  setTopology(topology: Topology | undefined): void {
    const next = new Map<string, RouteTotals>();
    for (const server of topology?.servers ?? [])
      for (const r of server.routes)
        next.set(
          r.upstream,
          this.routes.get(r.upstream) ?? {
            label: r.label,
            requests: 0,
            errors: 0,
            bytes: 0,
            byClass: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
          },
        );
    for (const [upstream, old] of this.routes) {
      if (next.has(upstream)) continue;
      const labels = { route: old.label, upstream };
      for (const c of CLASSES) this.requests.remove({ ...labels, class: c });
      this.bytes.remove(labels);
      this.upstreamTime.remove(labels);
    }
    this.routes = next;
    this.latency = new Map(
      [...next.keys()].map((u) => [u, this.latency.get(u) ?? new Array<number>(LATENCY_BOUNDS.length + 1).fill(0)]),
    );
  }

  /** Counts one record. */
  record(r: TrafficRecord): void {
    if (r.route === "") return void this.ignored.inc({ reason: "no_route" });
    const totals = this.routes.get(r.route);
    const cls = classOf(r.status);
    if (!totals) return void this.ignored.inc({ reason: "unknown_route" });
    if (!cls) return void this.ignored.inc({ reason: "malformed" });
    const labels = { route: totals.label, upstream: r.route };
    this.requests.inc({ ...labels, class: cls });
    this.bytes.inc(labels, r.bytes);
    if (r.upstreamSeconds !== null) {
      this.upstreamTime.observe(labels, r.upstreamSeconds);
      const latency = this.latency.get(r.route);
      const bucket = latencyBucket(r.upstreamSeconds);
      if (latency) latency[bucket] = (latency[bucket] ?? 0) + 1;
    }
    totals.requests++;
    totals.byClass[cls]++;
    if (cls === "5xx") totals.errors++;
    totals.bytes += r.bytes;
  }

  /** Counts a record line that did not parse. */
  malformed(): void {
    this.ignored.inc({ reason: "malformed" });
  }

  /** The running totals, by upstream name (a copy). */
  totals(): Map<string, RouteTotals> {
    return new Map([...this.routes].map(([k, v]) => [k, { ...v, byClass: { ...v.byClass } }]));
  }

  /** Requests, 5xx answers and upstream times per bucket, by upstream name (copies): what the charts read. */
  routeCounts(): Map<string, RouteCounts> {
    const out = new Map<string, RouteCounts>();
    for (const [upstream, t] of this.routes)
      out.set(upstream, {
        requests: t.requests,
        errors: t.errors,
        // Plain arrays: thousands of small typed arrays cost several times their bytes.
        latency: [...(this.latency.get(upstream) ?? [])],
      });
    return out;
  }

  /** How many routes have counters (the size of every per-route label set). */
  get size(): number {
    return this.routes.size;
  }
}

/** Where nginx appends the access records: inside the state dir, which only the controller's user can enter. */
export const trafficLogPath = (stateDir: string): string => join(stateDir, "logs", "traffic.jsonl");

/** Follows the traffic record file. */
export interface TrafficReceiver {
  readonly file: string;
  close(): Promise<void>;
}

export interface TrafficTailOptions {
  /** How often new records are read. Default 250 ms. */
  readonly pollMs?: number;
  /** Once everything is read and the file is at least this large, it is emptied. Default 8 MiB. */
  readonly rotateBytes?: number;
}

const CHUNK_BYTES = 1 << 20;
// Per poll: a backlog larger than this is read over the next polls, so one poll never holds the event loop long.
const MAX_CHUNKS_PER_POLL = 16;
// nginx writes each record (about 100 bytes) in one write(); a longer "line" is not one of ours.
const MAX_LINE_BYTES = 64 << 10;

/**
 * Opens the record file (creating it mode 0600, emptying what an earlier run left) and counts every line nginx
 * appends. The nginx master opens it as the controller's user before its workers drop privileges, so no other user
 * can write a record (a socket would have to be reachable by the workers' user, and so by every process of that
 * user). A file never makes nginx wait, as a full pipe would. It grows only while no controller reads it; once read
 * to the end past `rotateBytes` it is emptied in place (nginx appends, so it writes at the new end): a record
 * written between the final size check and the truncation (two back-to-back system calls) is lost.
 */
export async function startTrafficReceiver(
  stats: TrafficStats,
  file: string,
  log: Logger,
  options: TrafficTailOptions = {},
): Promise<TrafficReceiver> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const fh: FileHandle = await open(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    if (!(await fh.stat()).isFile()) throw new Error(`${file} is not a regular file`);
    // A file left by an older version (or created by nginx itself) may be 0644: nobody but us reads the records.
    await fh.chmod(0o600);
    await fh.truncate(0);
  } catch (e) {
    await fh.close();
    throw e;
  }
  const rotateBytes = options.rotateBytes ?? 8 << 20;
  const buf = Buffer.alloc(CHUNK_BYTES);
  let offset = 0;
  let pending = Buffer.alloc(0);

  const consume = (chunk: Buffer) => {
    const data = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    let from = 0;
    for (let nl = data.indexOf(10, from); nl >= 0; nl = data.indexOf(10, from)) {
      const r = parseRecord(data.toString("utf8", from, nl));
      if (r) stats.record(r);
      else stats.malformed();
      from = nl + 1;
    }
    // A copy: `chunk` is the read buffer, reused by the next read.
    pending = Buffer.from(data.subarray(from));
    if (pending.length > MAX_LINE_BYTES) {
      stats.malformed();
      pending = Buffer.alloc(0);
    }
  };

  const poll = async () => {
    for (let i = 0; i < MAX_CHUNKS_PER_POLL; i++) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
      consume(buf.subarray(0, bytesRead));
      if (bytesRead < buf.length) break;
    }
    const { size } = await fh.stat();
    if (size < offset) {
      // Emptied by someone else (an operator): what is there now is new.
      offset = 0;
      pending = Buffer.alloc(0);
    } else if (size === offset && offset >= rotateBytes) {
      // Checked again and emptied back to back, synchronously: a record nginx appends in between is lost, so the
      // window is kept to two system calls rather than a trip through the event loop.
      if (fstatSync(fh.fd).size === offset) {
        ftruncateSync(fh.fd, 0);
        offset = 0;
      }
    }
  };

  let running: Promise<void> | null = null;
  let lastError = "";
  const timer = setInterval(() => {
    running ??= poll()
      .then(() => void (lastError = ""))
      .catch((e: unknown) => {
        const msg = (e as Error).message;
        // Once per distinct failure, not every poll.
        if (msg !== lastError) log.warn({ file, err: msg }, "cannot read nginx's traffic records; retrying");
        lastError = msg;
      })
      .finally(() => (running = null));
  }, options.pollMs ?? 250);
  timer.unref();
  log.debug({ file }, "reading per-route access records from nginx");
  return {
    file,
    close: async () => {
      clearInterval(timer);
      await running;
      await fh.close();
    },
  };
}
