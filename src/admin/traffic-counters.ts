import { request } from "node:http";
import { STATS_PATH } from "../render/dynamic.js";
import type { Logger } from "../shared/log.js";
import {
  CLASSES,
  HISTOGRAM_BUCKETS,
  type EndpointCounts,
  type RouteCounts,
  type StatusClass,
  type TrafficCounts,
  type TrafficStats,
} from "./traffic.js";

/** The answer of one read, or why there is none (a value, never thrown). */
export type Parsed =
  { readonly ok: true; readonly counts: TrafficCounts } | { readonly ok: false; readonly error: string };

const ROUTE = /^(?:-|[A-Za-z0-9_.]{1,64})$/;
// `ip:port` as nginx prints $upstream_addr: IPv4, or IPv6 in brackets.
const ADDRESS = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\]):\d{1,5}$/;
const AMOUNT = /^\d{1,16}$/;
const NB = HISTOGRAM_BUCKETS.length;
// No deployment has this many counters (the dict holds ~250,000): a longer answer is not nginx's.
const MAX_LINES = 2_000_000;

interface MutableRoute {
  byClass: Record<StatusClass, number>;
  other: number;
  bytes: number;
  upstream: number[];
  upstreamMs: number;
  request: number[];
  requestMs: number;
}

const emptyRoute = (): MutableRoute => ({
  byClass: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
  other: 0,
  bytes: 0,
  upstream: new Array<number>(NB + 1).fill(0),
  upstreamMs: 0,
  request: new Array<number>(NB + 1).fill(0),
  requestMs: 0,
});

/**
 * Parses the counters nginx_lb_stats returns (its key layout is documented there): a header line, `<key> <amount>`
 * lines, and an end line that counts them, so a cut-off answer is refused whole. A line that does not fit the layout
 * refuses the answer too: it came from nowhere we know.
 */
export function parseCounters(text: string): Parsed {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (lines[0] !== "nginx-lb-stats 1") return { ok: false, error: "not an nginx-lb counters answer (header)" };
  if (lines.length > MAX_LINES) return { ok: false, error: `more than ${MAX_LINES} lines` };
  const end = /^end counters=(\d+)$/.exec(lines.at(-1) ?? "");
  if (!end || Number(end[1]) !== lines.length - 2)
    return { ok: false, error: "cut off: the end line is missing or counts another number of counters" };
  const routes = new Map<string, MutableRoute>();
  const endpoints = new Map<string, Map<string, { requests: number; errors: number }>>();
  const routeOf = (name: string) => {
    const key = name === "-" ? "" : name;
    let r = routes.get(key);
    if (!r) routes.set(key, (r = emptyRoute()));
    return r;
  };
  for (let i = 1; i < lines.length - 1; i++) {
    const line = lines[i] ?? "";
    const parts = line.split(" ");
    const amountText = parts.at(-1) ?? "";
    const [kind = "", route = ""] = parts;
    const bad = (why: string): Parsed => ({ ok: false, error: `line ${i + 1} ${JSON.stringify(line)}: ${why}` });
    if (!AMOUNT.test(amountText)) return bad("the amount is not a whole number");
    if (!ROUTE.test(route)) return bad("not a route name");
    const amount = Number(amountText);
    const arg = parts.length === 4 ? (parts[2] ?? "") : null;
    if (parts.length !== 3 && parts.length !== 4) return bad("not a counter");
    if (kind === "c" && arg !== null) {
      const m = /^([0-5])xx$/.exec(arg);
      if (!m) return bad("not a status class");
      const r = routeOf(route);
      const cls = CLASSES[Number(m[1]) - 1];
      if (cls) r.byClass[cls] += amount;
      else r.other += amount;
    } else if ((kind === "u" || kind === "t") && arg !== null) {
      const b = Number(arg);
      if (!/^\d{1,2}$/.test(arg) || b < 1 || b > NB + 1) return bad("not a histogram bucket");
      const list = kind === "u" ? routeOf(route).upstream : routeOf(route).request;
      list[b - 1] = (list[b - 1] ?? 0) + amount;
    } else if (kind === "b" && arg === null) routeOf(route).bytes += amount;
    else if (kind === "us" && arg === null) routeOf(route).upstreamMs += amount;
    else if (kind === "ts" && arg === null) routeOf(route).requestMs += amount;
    else if ((kind === "n" || kind === "x") && arg !== null) {
      if (!ADDRESS.test(arg)) return bad("not an endpoint address");
      const key = route === "-" ? "" : route;
      let byAddr = endpoints.get(key);
      if (!byAddr) endpoints.set(key, (byAddr = new Map()));
      const e = byAddr.get(arg) ?? { requests: 0, errors: 0 };
      byAddr.set(arg, e);
      if (kind === "n") e.requests += amount;
      else e.errors += amount;
    } else return bad("unknown counter");
  }
  const out = new Map<string, RouteCounts>();
  for (const [name, r] of routes)
    out.set(name, {
      byClass: r.byClass,
      other: r.other,
      bytes: r.bytes,
      upstream: r.upstream,
      upstreamSeconds: r.upstreamMs / 1000,
      request: r.request,
      requestSeconds: r.requestMs / 1000,
    });
  return {
    ok: true,
    counts: { routes: out, endpoints: endpoints as ReadonlyMap<string, Map<string, EndpointCounts>> },
  };
}

/** One GET of the counters: status and body, or a failure as a value. */
export type ReadCounters = () => Promise<
  { readonly ok: true; readonly status: number; readonly body: string } | { readonly ok: false; readonly error: string }
>;

const MAX_BODY = 64 << 20;

/** Reads the counters from nginx's control server on loopback, with the token (which reading also drains). */
export function httpCounterRead(port: number, token: string, timeoutMs = 5000): ReadCounters {
  return () =>
    new Promise((resolve) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path: STATS_PATH,
          method: "GET",
          headers: { "x-nginx-lb-token": token },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY) req.destroy(new Error(`answer larger than ${MAX_BODY} bytes`));
            else chunks.push(c);
          });
          res.on("end", () =>
            resolve({ ok: true, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
          );
          res.on("error", (e) => resolve({ ok: false, error: e.message }));
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on("error", (e) => resolve({ ok: false, error: e.message }));
      req.end();
    });
}

/** A repeating timer (injectable: tests drive reads by hand). Returns its cancel. */
export type Every = (ms: number, fn: () => void) => () => void;

export const realEvery: Every = (ms, fn) => {
  const t = setInterval(fn, ms);
  t.unref();
  return () => clearInterval(t);
};

export interface CounterReaderOptions {
  readonly read: ReadCounters;
  /** Default 1000 ms. */
  readonly intervalMs?: number;
  readonly every?: Every;
  /**
   * Consecutive failed reads before the log says so: nginx is not up yet at start, and a restart takes a moment.
   * Default 10.
   */
  readonly quietFailures?: number;
}

export interface CounterReader {
  /** One read now (what the timer does); resolves when it is counted. */
  readNow(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Reads nginx's traffic counters every `intervalMs` and adds them to `stats`. nginx hands out each count once (a read
 * drains what it returns), so there is no delta to compute: a reload keeps what is not read yet, a new master starts
 * from an empty dict, and neither can make a figure go back. Failures are logged once each (after `quietFailures` in
 * a row) and when reading works again; a failed read loses nothing that nginx still holds.
 */
export function startCounterReader(stats: TrafficStats, options: CounterReaderOptions, log: Logger): CounterReader {
  const quiet = options.quietFailures ?? 10;
  let failures = 0;
  let reported = "";
  const fail = (error: string) => {
    failures++;
    if (failures >= quiet && error !== reported) {
      log.warn({ err: error, failedReads: failures }, "cannot read nginx's traffic counters; retrying every second");
      reported = error;
    }
  };
  const once = async () => {
    const r = await options.read();
    if (!r.ok) return fail(r.error);
    if (r.status !== 200) return fail(`HTTP ${r.status}: ${r.body.trim().slice(0, 200)}`);
    const parsed = parseCounters(r.body);
    if (!parsed.ok) return fail(`nginx's counters answer is unusable: ${parsed.error}`);
    stats.add(parsed.counts);
    if (reported !== "") log.info({ failedReads: failures }, "reading nginx's traffic counters again");
    failures = 0;
    reported = "";
  };
  let running: Promise<void> | null = null;
  const readNow = () =>
    (running ??= once()
      .catch((e: unknown) => fail((e as Error).message))
      .finally(() => (running = null)));
  const cancel = (options.every ?? realEvery)(options.intervalMs ?? 1000, () => void readNow());
  log.debug("reading per-route traffic counters from nginx once a second");
  return {
    readNow,
    close: async () => {
      cancel();
      await running;
    },
  };
}
