import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { StatusStore } from "../reconciler/status.js";
import type { Logger } from "../shared/log.js";
import { isLoopback, tokenMatches, type AdminConfig } from "./config.js";
import { DASHBOARD_HTML, LOGIN_HTML } from "./dashboard.js";
import { admitEventClient, clientAddress, type EventClient } from "./event-slots.js";
import { isUpstreamName } from "../render/tokens.js";
import { SeriesStore } from "./series.js";
import { LATENCY_BOUNDS, type RouteTotals, type TrafficStats } from "./traffic.js";
import { probeAnswer } from "./health.js";
import type { TableClient } from "../sources/services-write.js";
import { rates, safeJson, statusView, type RouteTraffic } from "./view.js";

/** What the admin server reads once the controller runs. */
export interface AdminSources {
  readonly status: StatusStore;
  readonly traffic: TrafficStats;
  /** The prom-client registry /metrics serves. */
  readonly metrics: Registry;
  /** The routing table in etcd (`run --services-etcd-prefix`), for `/api/services`; absent with a routes file. */
  readonly routesTable?: TableClient;
}

/** A listening admin server; it answers 503 (readyz) until `attach` gives it the controller's status. */
export interface AdminServer {
  readonly host: string;
  readonly port: number;
  attach(sources: AdminSources): void;
  close(): Promise<void>;
}

const MAX_CLIENT_BACKLOG = 8 << 20;
const RATE_WINDOW_SAMPLES = 11; // one a second: rates over the last ten seconds
const COOKIE = "nlb_admin_token";

/** The token of an `Authorization: Bearer` header. */
function bearerToken(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  return auth?.startsWith("Bearer ") ? auth.slice(7).trim() : undefined;
}

function presentedToken(req: IncomingMessage): string | undefined {
  const bearer = bearerToken(req);
  if (bearer !== undefined) return bearer;
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === COOKIE) {
      try {
        return decodeURIComponent(v.join("="));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "cache-control": "no-store",
  "referrer-policy": "no-referrer",
};
const CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

function send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": type, ...SECURITY_HEADERS, ...extra });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

const SERIES_PREFIX = "/api/routes/";

/** Closes a chart bucket when one is due: the counters are copied only then (every few seconds, not every tick). */
function observeSeries(series: SeriesStore, traffic: TrafficStats): void {
  const now = Date.now();
  if (series.due(now)) series.observe(now, traffic.routeCounts());
}

/**
 * `/api/routes/<upstream>/series`: one route's chart data, fetched by the dashboard for the route it shows (never
 * every route in every status push). 400 for a name outside the upstream grammar, 404 for a route not in force.
 */
function sendSeries(res: ServerResponse, path: string, sources: AdminSources, series: SeriesStore): void {
  const [upstream = "", rest, ...more] = path.slice(SERIES_PREFIX.length).split("/");
  if (rest !== "series" || more.length > 0) return send(res, 404, "text/plain", "not found\n");
  if (!isUpstreamName(upstream))
    return send(res, 400, "text/plain", "route: not an upstream name (nlb_ and 16 hex digits, as /api/status lists)\n");
  const known = (sources.status.get().topology?.servers ?? []).some((s) =>
    s.routes.some((r) => r.upstream === upstream),
  );
  if (!known) return send(res, 404, "text/plain", `no route with upstream ${upstream} is in force (see /api/status)\n`);
  return send(res, 200, "application/json", safeJson({ upstream, ...series.get(upstream) }));
}

/** Binds the admin listener; it changes nothing in the controller (`/api/services` writes to etcd, never to it). */
export async function startAdmin(config: AdminConfig, log: Logger): Promise<AdminServer> {
  let sources: AdminSources | null = null;
  const samples: { at: number; totals: Map<string, RouteTotals> }[] = [];
  const clients = new Map<ServerResponse, EventClient>();
  let lastPushedTotals = "";
  let pushTimer: NodeJS.Timeout | null = null;
  let unsubscribe: () => void = () => undefined;

  // Live totals against the oldest sample of the window: traffic shows at once, not a tick later.
  const currentRates = (): Map<string, RouteTraffic> =>
    sources ? rates(samples[0], { at: Date.now(), totals: sources.traffic.totals() }) : new Map();
  const view = () => (sources ? statusView(sources.status.get(), currentRates(), new Date()) : null);
  const push = () => {
    if (clients.size === 0) return;
    const v = view();
    if (!v) return;
    const frame = `event: status\ndata: ${safeJson(v)}\n\n`;
    for (const c of clients.keys()) {
      // A client that stops reading would make its buffer grow without end: drop it, it reconnects when it can.
      if (c.writableLength > MAX_CLIENT_BACKLOG) {
        clients.delete(c);
        c.destroy();
      } else c.write(frame);
    }
  };
  const pushSoon = () => {
    // Bursts of status changes (a 500-key burst) become at most ten pushes a second.
    pushTimer ??= setTimeout(() => {
      pushTimer = null;
      push();
    }, 100);
  };
  const series = new SeriesStore({ bounds: LATENCY_BOUNDS });
  let tick = 0;
  const ticker = setInterval(() => {
    if (!sources) return;
    observeSeries(series, sources.traffic);
    samples.push({ at: Date.now(), totals: sources.traffic.totals(true) });
    if (samples.length > RATE_WINDOW_SAMPLES) samples.shift();
    const totals = JSON.stringify([...(samples.at(-1)?.totals ?? [])].map(([k, v]) => [k, v.requests]));
    // Rates also move when traffic stops (the window slides), so push at least every two seconds.
    if (totals !== lastPushedTotals || tick % 2 === 0) push();
    lastPushedTotals = totals;
    if (++tick % 15 === 0) for (const c of clients.keys()) c.write(": keepalive\n\n");
  }, 1000);
  ticker.unref();

  const authorized = (req: IncomingMessage) => !config.token || tokenMatches(presentedToken(req), config.token);
  // Presented a token: the configured one, or without one the local operator token from the state dir.
  const authenticated = (req: IncomingMessage) => {
    const expected = config.token ?? config.localToken;
    return expected !== undefined && tokenMatches(presentedToken(req), expected);
  };
  // Without a token, loopback is the only protection: a web page could reach it through DNS rebinding, which
  // shows as a foreign Host header. Only loopback names and the listen address itself are accepted.
  const allowedHost = (req: IncomingMessage) => {
    if (config.token) return true;
    const host = (req.headers.host ?? "").replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
    return host === "" || isLoopback(host) || host === config.host;
  };

  /**
   * `/api/services`. A write needs the configured admin token in an Authorization header, on loopback too (a cookie
   * is sent by a browser on its own: it never authorises a write); without a configured token there is no write.
   * Reads are authorised as every other path (checked before this is called).
   */
  const servicesRoute = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const text = "text/plain";
    const method = req.method ?? "GET";
    if (method !== "GET" && method !== "HEAD") {
      if (!config.token)
        return send(
          res,
          405,
          text,
          "the admin server writes nothing without an admin token: start nginx-lb run with NGINX_LB_ADMIN_TOKEN or --admin-token-file to enable PUT /api/services\n",
          { allow: "GET, HEAD" },
        );
      if (!tokenMatches(bearerToken(req), config.token))
        return send(res, 403, text, "forbidden: a write needs Authorization: Bearer <admin token>\n");
    }
    if (!sources) return send(res, 503, text, "the controller is starting\n");
    if (!sources.routesTable) {
      const routes = sources.status.get().routes;
      const file = routes?.kind === "file" ? routes.file : sources.status.get().services.file;
      return send(
        res,
        404,
        text,
        `no routing table in etcd: the routes come from the file ${file}; edit it and send SIGUSR2 to the controller ` +
          `(kill -USR2 ${process.pid}). /api/services serves the table of nginx-lb run --services-etcd-prefix\n`,
      );
    }
    // Loaded here: it writes through the etcd client, which a controller with a services file never needs.
    const { servicesApi, readBody } = await import("./services-api.js");
    const url = new URL(req.url ?? "/", "http://admin");
    const a = await servicesApi(sources.routesTable, {
      method,
      rest: path.slice("/api/services".length),
      query: url.searchParams,
      ifMatch: req.headers["if-match"],
      body: () => readBody(req),
    });
    if (method !== "GET" && method !== "HEAD") {
      const b = a.body as { revision?: number; written?: boolean; dryRun?: boolean; error?: string };
      log.info(
        {
          method,
          path,
          status: a.status,
          from: req.socket.remoteAddress,
          written: b.written ?? false,
          dryRun: b.dryRun,
          revision: b.revision,
          error: b.error,
        },
        "admin API: routing table write",
      );
    }
    return send(res, a.status, "application/json", safeJson(a.body), a.headers);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const servicesPath = path === "/api/services" || path.startsWith("/api/services/");
    if (servicesPath && req.method !== "GET" && req.method !== "HEAD") return servicesRoute(req, res, path);
    if (req.method !== "GET" && req.method !== "HEAD")
      return send(res, 405, "text/plain", "the admin server is read-only\n", { allow: "GET, HEAD" });
    // Liveness and readiness stay open (no token, any Host) so orchestrator probes need no secret; they reveal no
    // configuration.
    const probe = probeAnswer(path, sources?.status.get() ?? null);
    if (probe) return send(res, probe.status, "text/plain", probe.body);
    if (!allowedHost(req)) return send(res, 421, "text/plain", "the admin server answers loopback host names only\n");
    if (!authorized(req)) {
      const browser = path === "/" && (req.headers.accept ?? "").includes("text/html");
      if (browser) return send(res, 401, "text/html; charset=utf-8", LOGIN_HTML, { "content-security-policy": CSP });
      return send(res, 401, "text/plain", "unauthorized: send Authorization: Bearer <admin token>\n", {
        "www-authenticate": 'Bearer realm="nginx-lb"',
      });
    }
    if (servicesPath) return servicesRoute(req, res, path);
    if (path === "/")
      return send(res, 200, "text/html; charset=utf-8", DASHBOARD_HTML, { "content-security-policy": CSP });
    if (!sources) return send(res, 503, "text/plain", "the controller is starting\n");
    if (path === "/metrics") return send(res, 200, sources.metrics.contentType, await sources.metrics.metrics());
    // The view joins every route with its traffic: built only for the two paths that serve it (not per scrape).
    if (path === "/api/status") return send(res, 200, "application/json", safeJson(view()));
    if (path.startsWith(SERIES_PREFIX)) return sendSeries(res, path, sources, series);
    if (path === "/api/events" && req.method === "HEAD") return send(res, 200, "text/event-stream", "");
    if (path === "/api/events") {
      const client = { address: clientAddress(req.socket.remoteAddress), authenticated: authenticated(req) };
      const admitted = admitEventClient(clients.values(), client);
      if (!admitted.ok) return send(res, 503, "text/plain", `${admitted.why}\n`, { "retry-after": "10" });
      res.writeHead(200, { "content-type": "text/event-stream", ...SECURITY_HEADERS, connection: "keep-alive" });
      res.write(`retry: 2000\nevent: status\ndata: ${safeJson(view())}\n\n`);
      clients.set(res, client);
      req.on("close", () => clients.delete(res));
      return;
    }
    return send(res, 404, "text/plain", "not found\n");
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log.error({ err: (e as Error).message, path: req.url }, "admin request failed");
      if (!res.headersSent) send(res, 500, "text/plain", "internal error\n");
      else res.end();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  log.info(
    { listen: `${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`, auth: !!config.token },
    "admin server listening",
  );

  return {
    host: addr.address,
    port: addr.port,
    attach(s) {
      sources = s;
      s.traffic.setTopology(s.status.get().topology);
      samples.push({ at: Date.now(), totals: s.traffic.totals(true) });
      let topology = s.status.get().topology;
      unsubscribe = s.status.subscribe((snap) => {
        if (snap.topology !== topology) s.traffic.setTopology((topology = snap.topology));
        pushSoon();
      });
    },
    close: async () => {
      clearInterval(ticker);
      if (pushTimer) clearTimeout(pushTimer);
      unsubscribe();
      for (const c of clients.keys()) c.end();
      clients.clear();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}
