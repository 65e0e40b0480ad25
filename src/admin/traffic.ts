import { constants, fstatSync, ftruncateSync } from "node:fs";
import { mkdir, open, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Counter, type Registry } from "prom-client";
import { BucketHistogram } from "./bucket-histogram.js";
import type { Topology, TopologyRoute } from "../reconciler/topology.js";
import type { Logger } from "../shared/log.js";
import type { RouteCounts as SeriesCounts } from "./series.js";

/** The histogram bounds (seconds), the same in nginx's counters (src/nginx/lua/nginx_lb_stats.lua, in ms). */
export const HISTOGRAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** One request as nginx reports it (the `nlb` log_format of src/render/nginx-conf.ts). */
export interface TrafficRecord {
  /** The route's upstream name; empty for requests no route matched (unknown host). */
  readonly route: string;
  readonly status: number;
  readonly requestSeconds: number;
  /** Time of the upstream that answered; null when nginx answered itself (503 without endpoints, no route). */
  readonly upstreamSeconds: number | null;
  readonly bytes: number;
  /** Every endpoint tried (`ip:port`), in order: all but the last failed to connect or timed out. */
  readonly endpoints: readonly string[];
}

/** A number as nginx writes one (digits, maybe a fraction); null for anything else, `-` (none) included. */
const num = (v: string | undefined): number | null => {
  if (v === undefined || !/^\d+(\.\d+)?$/.test(v)) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
};

/** The fields of a record line, in the `nlb` log_format's order, separated by tabs. */
const RECORD_FIELDS = 6;

/**
 * Parses one record line from nginx: route, status, request time, upstream times, bytes sent, upstream addresses,
 * tab-separated, each as nginx writes it (`-` for a value nginx does not have). Null when it is not a record we wrote.
 */
export function parseRecord(line: string): TrafficRecord | null {
  const f = line.split("\t");
  if (f.length !== RECORD_FIELDS) return null;
  const [route = "", s, t, u = "", b, a = ""] = f;
  const status = num(s);
  const requestSeconds = num(t);
  if (status === null || requestSeconds === null) return null;
  // With retries nginx lists every upstream tried ("0.001, 0.004"); the last one is the one that answered.
  const tried = u.split(/[,:]/).map((x) => x.trim());
  // Addresses: "a, b" after retries, " : " between internal redirects; an IPv6 address has colons of its own.
  const addrs = a.split(/[ ,]+/).filter((x) => x !== "" && x !== ":" && x !== "-");
  return {
    // A request no route matched: the route is empty (nginx writes an empty value as nothing, a missing one as `-`).
    route: route === "-" ? "" : route,
    status,
    requestSeconds,
    upstreamSeconds: num(tried.at(-1)),
    bytes: num(b) ?? 0,
    endpoints: addrs,
  };
}

type MutableRouteCounts = {
  byClass: Record<StatusClass, number>;
  other: number;
  bytes: number;
  upstream: number[];
  upstreamSeconds: number;
  request: number[];
  requestSeconds: number;
};

/** A route's counts before any request. */
export const emptyCounts = (): MutableRouteCounts => ({
  byClass: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
  other: 0,
  bytes: 0,
  upstream: new Array<number>(HISTOGRAM_BUCKETS.length + 1).fill(0),
  upstreamSeconds: 0,
  request: new Array<number>(HISTOGRAM_BUCKETS.length + 1).fill(0),
  requestSeconds: 0,
});

/** A time's histogram bucket as BucketHistogram.observeValue places it: the first bound it does not exceed. */
const bucketOf = (seconds: number): number => {
  const i = HISTOGRAM_BUCKETS.findIndex((b) => seconds <= b);
  return i < 0 ? HISTOGRAM_BUCKETS.length : i;
};

/** Upper bounds (seconds) of the upstream response time histogram; +Inf comes after. */
export const LATENCY_BOUNDS: readonly number[] = HISTOGRAM_BUCKETS;

export const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;
export type StatusClass = (typeof CLASSES)[number];
const classOf = (status: number): StatusClass | null => CLASSES[Math.floor(status / 100) - 1] ?? null;

/** What nginx counted for one route over some span (one read of its counters). */
export interface RouteCounts {
  readonly byClass: Readonly<Record<StatusClass, number>>;
  /** Requests with a status outside 100..599. */
  readonly other: number;
  readonly bytes: number;
  /** Requests per histogram bucket (HISTOGRAM_BUCKETS, then one above the last bound), and the sum in seconds. */
  readonly upstream: readonly number[];
  readonly upstreamSeconds: number;
  readonly request: readonly number[];
  readonly requestSeconds: number;
}

/** Attempts sent to one endpoint, and how many of them failed (connection error, timeout, 5xx). */
export interface EndpointCounts {
  readonly requests: number;
  readonly errors: number;
}

/** One read of nginx's counters: per route upstream name ("" for no route), and per route and endpoint address. */
export interface TrafficCounts {
  readonly routes: ReadonlyMap<string, RouteCounts>;
  readonly endpoints: ReadonlyMap<string, ReadonlyMap<string, EndpointCounts>>;
}

/** Running totals of one endpoint of a route. */
export interface EndpointTotals {
  requests: number;
  errors: number;
}

/** Running totals of one route, for request and error rates. */
export interface RouteTotals {
  readonly label: string;
  requests: number;
  errors: number;
  bytes: number;
  readonly byClass: Record<StatusClass, number>;
  /** By endpoint address, for the route's current endpoints that traffic reached. */
  readonly endpoints: ReadonlyMap<string, EndpointTotals>;
}

/** A route's totals as TrafficStats keeps them: the endpoints' map is made when the first endpoint is counted. */
type OwnRouteTotals = Omit<RouteTotals, "endpoints"> & { endpoints: Map<string, EndpointTotals> };

/**
 * The endpoints of a route no request reached yet, shared: at 10,000 routes a map each would be megabytes of empty
 * hash tables held for as long as the routes live. Never written: `countEndpoint` gives the route its own map first.
 */
const NO_ENDPOINTS: Map<string, EndpointTotals> = new Map();

type RouteLabels = "route" | "upstream";

/**
 * A route as the model has it: the topology's view, the last `setTopology` (epoch) with it, and its endpoints'
 * addresses once traffic named one of them (a set per route for 10,000 routes that see no traffic would hold as much
 * again as the views themselves).
 */
interface ModelRoute {
  readonly view: TopologyRoute;
  addrs: ReadonlySet<string> | null;
  seen: number;
}

const addressesOf = (view: TopologyRoute): ReadonlySet<string> => new Set(view.endpoints.map((e) => e.address));

/**
 * Per-route (and, one upstream per route, per-upstream) and per-endpoint traffic counters, fed by nginx's counters
 * (`add`) or by access records (`record`). Label sets are bounded by the current model: counts naming a route or an
 * endpoint the model does not have are counted once, unlabelled, as ignored.
 */
export class TrafficStats {
  private readonly routes = new Map<string, OwnRouteTotals>();
  /** Per route upstream name: what the model says of the route (kept with `routes`: the same keys). */
  private readonly model = new Map<string, ModelRoute>();
  private epoch = 0;
  private readonly requests: Counter<RouteLabels | "class">;
  private readonly bytes: Counter<RouteLabels>;
  private readonly upstreamTime: BucketHistogram<RouteLabels>;
  private readonly requestTime: BucketHistogram<RouteLabels>;
  private readonly endpointRequests: Counter<"route" | "endpoint">;
  private readonly endpointErrors: Counter<"route" | "endpoint">;
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
    this.upstreamTime = new BucketHistogram({
      name: "nginx_lb_route_upstream_response_seconds",
      help: "Upstream response time per route (and its upstream); after retries, of the endpoint that answered",
      labelNames: ["route", "upstream"],
      buckets: HISTOGRAM_BUCKETS,
      registers,
    });
    this.requestTime = new BucketHistogram({
      name: "nginx_lb_route_request_seconds",
      help: "Request time per route (and its upstream), from the client's first byte to the last byte sent",
      labelNames: ["route", "upstream"],
      buckets: HISTOGRAM_BUCKETS,
      registers,
    });
    this.endpointRequests = new Counter({
      name: "nginx_lb_endpoint_requests_total",
      help: "Per route and endpoint: requests sent to the endpoint (each retry counts for the endpoint it went to)",
      labelNames: ["route", "endpoint"],
      registers,
    });
    this.endpointErrors = new Counter({
      name: "nginx_lb_endpoint_errors_total",
      help: "Per route and endpoint: requests that failed there (connection error, timeout, or a 5xx answer)",
      labelNames: ["route", "endpoint"],
      registers,
    });
    this.ignored = new Counter({
      name: "nginx_lb_traffic_records_ignored_total",
      help: "Requests not counted per route or endpoint: no route matched, a route or endpoint not in the current model, or malformed",
      labelNames: ["reason"],
      registers,
    });
  }

  /**
   * Follows the model: new routes and endpoints start at zero, removed ones lose their series (bounded label sets).
   */
  setTopology(topology: Topology | undefined): void {
    // The maps are updated in place rather than rebuilt: at 10,000 routes each rebuilt map is a hash table of a few
    // hundred KiB, which V8 allocates in its large-object space and frees only in a full collection.
    const epoch = ++this.epoch;
    for (const server of topology?.servers ?? [])
      for (const r of server.routes) {
        const upstream = r.upstream;
        const old = this.routes.get(upstream);
        const known = this.model.get(upstream);
        // A route whose view is the one of the last topology (compile keeps an unchanged route's view): its endpoints
        // and counters stand as they are (a change to one of 10,000 sites rebuilds one set, not all of them).
        if (old !== undefined && known !== undefined && known.view === r) {
          known.seen = epoch;
          continue;
        }
        const totals = old ?? {
          label: r.label,
          requests: 0,
          errors: 0,
          bytes: 0,
          byClass: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
          endpoints: NO_ENDPOINTS,
        };
        const addrs = totals.endpoints.size > 0 ? addressesOf(r) : null;
        this.model.set(upstream, { view: r, addrs, seen: epoch });
        if (addrs)
          for (const addr of [...totals.endpoints.keys()]) {
            if (addrs.has(addr)) continue;
            totals.endpoints.delete(addr);
            this.endpointRequests.remove({ route: totals.label, endpoint: addr });
            this.endpointErrors.remove({ route: totals.label, endpoint: addr });
          }
        this.routes.set(upstream, totals);
      }
    // By key: an entries iterator makes a pair array per route, 10,000 of them per change.
    for (const upstream of this.routes.keys()) {
      const old = this.routes.get(upstream);
      if (old === undefined || this.model.get(upstream)?.seen === epoch) continue;
      const labels = { route: old.label, upstream };
      for (const c of CLASSES) this.requests.remove({ ...labels, class: c });
      this.bytes.remove(labels);
      this.upstreamTime.drop(labels);
      this.requestTime.drop(labels);
      for (const addr of old.endpoints.keys()) {
        this.endpointRequests.remove({ route: old.label, endpoint: addr });
        this.endpointErrors.remove({ route: old.label, endpoint: addr });
      }
      // Deleting the entry being visited is safe: a Map's iteration continues with the entries after it.
      this.routes.delete(upstream);
      this.model.delete(upstream);
    }
  }

  private countEndpoint(upstream: string, totals: OwnRouteTotals, addr: string, requests: number, errors: number) {
    const known = this.model.get(upstream);
    if (known) known.addrs ??= addressesOf(known.view);
    if (!known?.addrs?.has(addr)) return void this.ignored.inc({ reason: "unknown_endpoint" }, requests);
    if (totals.endpoints === NO_ENDPOINTS) totals.endpoints = new Map();
    let e = totals.endpoints.get(addr);
    if (!e) totals.endpoints.set(addr, (e = { requests: 0, errors: 0 }));
    e.requests += requests;
    e.errors += errors;
    const labels = { route: totals.label, endpoint: addr };
    this.endpointRequests.inc(labels, requests);
    // Created with the requests' series, so a scrape shows 0 errors rather than no series.
    this.endpointErrors.inc(labels, errors);
  }

  /** Counts one access record. */
  record(r: TrafficRecord): void {
    if (r.route === "") return void this.ignored.inc({ reason: "no_route" });
    const totals = this.routes.get(r.route);
    const cls = classOf(r.status);
    if (!totals) return void this.ignored.inc({ reason: "unknown_route" });
    if (!cls) return void this.ignored.inc({ reason: "malformed" });
    const labels = { route: totals.label, upstream: r.route };
    this.requests.inc({ ...labels, class: cls });
    this.bytes.inc(labels, r.bytes);
    if (r.upstreamSeconds !== null) this.upstreamTime.observeValue(labels, r.upstreamSeconds);
    this.requestTime.observeValue(labels, r.requestSeconds);
    totals.requests++;
    totals.byClass[cls]++;
    if (cls === "5xx") totals.errors++;
    totals.bytes += r.bytes;
    r.endpoints.forEach((addr, i) => {
      const last = i === r.endpoints.length - 1;
      this.countEndpoint(r.route, totals, addr, 1, !last || r.status >= 500 ? 1 : 0);
    });
  }

  /**
   * Counts a batch of access records (what one read of the record file found) exactly as `record` would one by one,
   * but as one addition per route and endpoint: labelled counters cost a label lookup per call, which per record was
   * most of the controller's time per request.
   */
  recordAll(records: readonly TrafficRecord[]): void {
    const routes = new Map<string, MutableRouteCounts>();
    const endpoints = new Map<string, Map<string, EndpointTotals>>();
    let noRoute = 0;
    let unknownRoute = 0;
    let malformed = 0;
    for (const r of records) {
      // The same checks, in the same order, as `record`.
      if (r.route === "") {
        noRoute++;
        continue;
      }
      if (!this.routes.has(r.route)) {
        unknownRoute++;
        continue;
      }
      const cls = classOf(r.status);
      if (!cls) {
        malformed++;
        continue;
      }
      let c = routes.get(r.route);
      if (!c) routes.set(r.route, (c = emptyCounts()));
      c.byClass[cls]++;
      c.bytes += r.bytes;
      if (r.upstreamSeconds !== null) {
        const u = bucketOf(r.upstreamSeconds);
        c.upstream[u] = (c.upstream[u] ?? 0) + 1;
        c.upstreamSeconds += r.upstreamSeconds;
      }
      const t = bucketOf(r.requestSeconds);
      c.request[t] = (c.request[t] ?? 0) + 1;
      c.requestSeconds += r.requestSeconds;
      let byAddr = endpoints.get(r.route);
      if (!byAddr) endpoints.set(r.route, (byAddr = new Map()));
      const last = r.endpoints.length - 1;
      r.endpoints.forEach((addr, i) => {
        let e = byAddr.get(addr);
        if (!e) byAddr.set(addr, (e = { requests: 0, errors: 0 }));
        e.requests++;
        if (i < last || r.status >= 500) e.errors++;
      });
    }
    if (noRoute > 0) this.ignored.inc({ reason: "no_route" }, noRoute);
    if (unknownRoute > 0) this.ignored.inc({ reason: "unknown_route" }, unknownRoute);
    if (malformed > 0) this.ignored.inc({ reason: "malformed" }, malformed);
    this.add({ routes, endpoints });
  }

  /** Adds one read of nginx's counters. */
  add(counts: TrafficCounts): void {
    for (const [upstream, c] of counts.routes) {
      const requests = CLASSES.reduce((n, k) => n + c.byClass[k], 0) + c.other;
      if (upstream === "") {
        if (requests > 0) this.ignored.inc({ reason: "no_route" }, requests);
        continue;
      }
      const totals = this.routes.get(upstream);
      if (!totals) {
        if (requests > 0) this.ignored.inc({ reason: "unknown_route" }, requests);
        continue;
      }
      const labels = { route: totals.label, upstream };
      for (const k of CLASSES)
        if (c.byClass[k] > 0) {
          this.requests.inc({ ...labels, class: k }, c.byClass[k]);
          totals.byClass[k] += c.byClass[k];
          totals.requests += c.byClass[k];
        }
      totals.errors += c.byClass["5xx"];
      if (c.other > 0) this.ignored.inc({ reason: "malformed" }, c.other);
      if (c.bytes > 0 || requests > 0) this.bytes.inc(labels, c.bytes);
      totals.bytes += c.bytes;
      if (c.upstream.some((n) => n > 0)) this.upstreamTime.addCounts(labels, c.upstream, c.upstreamSeconds);
      if (c.request.some((n) => n > 0)) this.requestTime.addCounts(labels, c.request, c.requestSeconds);
    }
    for (const [upstream, byAddr] of counts.endpoints) {
      const totals = this.routes.get(upstream);
      for (const [addr, e] of byAddr) {
        if (!totals) this.ignored.inc({ reason: upstream === "" ? "no_route" : "unknown_route" }, e.requests);
        else this.countEndpoint(upstream, totals, addr, e.requests, e.errors);
      }
    }
  }

  /** Counts a record line that did not parse. */
  malformed(): void {
    this.ignored.inc({ reason: "malformed" });
  }

  /**
   * The running totals, by upstream name (a copy). `counted`: only routes with a request, an error or an endpoint
   * counted; a rate against a route left out is a rate against zeros (view.ts `rates`), so the samples of the rate
   * window keep only these: at 10,000 quiet routes a whole copy per second would be megabytes held and thrown away.
   */
  totals(counted = false): Map<string, RouteTotals> {
    const routes = [...this.routes];
    return new Map(
      (counted ? routes.filter(([, v]) => v.requests > 0 || v.errors > 0 || v.endpoints.size > 0) : routes).map(
        ([k, v]) => [
          k,
          {
            ...v,
            byClass: { ...v.byClass },
            endpoints: new Map([...v.endpoints].map(([a, e]) => [a, { ...e }])),
          },
        ],
      ),
    );
  }

  /**
   * Requests, 5xx answers and upstream times per bucket, by upstream name (copies): what the charts read. The times
   * are the upstream time histogram's own counts (none before a route's first upstream answer).
   */
  routeCounts(): Map<string, SeriesCounts> {
    const out = new Map<string, SeriesCounts>();
    for (const [upstream, t] of this.routes)
      out.set(upstream, {
        requests: t.requests,
        errors: t.errors,
        latency: this.upstreamTime.countsOf({ route: t.label, upstream }) ?? [],
      });
    return out;
  }

  /** How many routes have counters (the size of every per-route label set). */
  get size(): number {
    return this.routes.size;
  }
}

/** Where nginx appends the access records: inside the state dir, which only the controller's user can enter. */
export const trafficLogPath = (stateDir: string): string => join(stateDir, "logs", "traffic.tsv");

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
    const records: TrafficRecord[] = [];
    for (let nl = data.indexOf(10, from); nl >= 0; nl = data.indexOf(10, from)) {
      const r = parseRecord(data.toString("utf8", from, nl));
      if (r) records.push(r);
      else stats.malformed();
      from = nl + 1;
    }
    // One addition per route and endpoint for the whole chunk.
    stats.recordAll(records);
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
