import dgram from "node:dgram";
import { Counter, Histogram, type Registry } from "prom-client";
import type { Topology } from "../reconciler/topology.js";
import type { Logger } from "../shared/log.js";

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

/** Parses one syslog datagram from nginx (`<PRI>date tag: {json}`); null when it is not a record we wrote. */
export function parseRecord(datagram: string): TrafficRecord | null {
  const start = datagram.indexOf("{");
  if (start < 0) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(datagram.slice(start));
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
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
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
    if (r.upstreamSeconds !== null) this.upstreamTime.observe(labels, r.upstreamSeconds);
    totals.requests++;
    totals.byClass[cls]++;
    if (cls === "5xx") totals.errors++;
    totals.bytes += r.bytes;
  }

  /** Counts a datagram that did not parse. */
  malformed(): void {
    this.ignored.inc({ reason: "malformed" });
  }

  /** The running totals, by upstream name (a copy). */
  totals(): Map<string, RouteTotals> {
    return new Map([...this.routes].map(([k, v]) => [k, { ...v, byClass: { ...v.byClass } }]));
  }

  /** How many routes have counters (the size of every per-route label set). */
  get size(): number {
    return this.routes.size;
  }
}

/** Receives nginx's access records on loopback UDP. */
export interface TrafficReceiver {
  readonly port: number;
  close(): Promise<void>;
}

/** Binds 127.0.0.1:`preferredPort` (an ephemeral port when that is taken) and feeds every record to `stats`. */
export async function startTrafficReceiver(
  stats: TrafficStats,
  preferredPort: number,
  log: Logger,
): Promise<TrafficReceiver> {
  const bind = (port: number) =>
    new Promise<dgram.Socket>((resolve, reject) => {
      const sock = dgram.createSocket("udp4");
      sock.once("error", reject);
      sock.bind(port, "127.0.0.1", () => {
        sock.off("error", reject);
        resolve(sock);
      });
    });
  const sock = await bind(preferredPort).catch(() => bind(0));
  // Bursts beyond the buffer are dropped by the kernel (nginx never waits); a larger buffer drops fewer. The kernel
  // caps it at net.core.rmem_max.
  try {
    sock.setRecvBufferSize(8 << 20);
  } catch {
    // keep the default buffer
  }
  sock.on("message", (msg) => {
    const r = parseRecord(msg.toString("utf8"));
    if (r) stats.record(r);
    else stats.malformed();
  });
  sock.on("error", (e) => log.warn({ err: e.message }, "traffic receiver error"));
  const port = sock.address().port;
  log.debug({ port }, "receiving per-route access records from nginx");
  return { port, close: () => new Promise((r) => sock.close(() => r())) };
}
