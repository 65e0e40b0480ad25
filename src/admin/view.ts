import { type EndpointEjection, withEjections } from "../health/ejections.js";
import type { ApplyRecord, StatusSnapshot } from "../reconciler/status.js";
import type { TopologyServer } from "../reconciler/topology.js";
import type { RouteTotals } from "./traffic.js";

/** Whether nginx serves a confirmed config, and if not, why. */
export function readiness(s: StatusSnapshot | null): { ready: boolean; why: string } {
  if (!s) return { ready: false, why: "the controller is starting" };
  if (!s.nginx.running)
    return { ready: false, why: `nginx is not running${s.nginx.lastError ? `: ${s.nginx.lastError}` : ""}` };
  if (s.nginx.generation === null)
    return {
      ready: false,
      why: `nginx runs no confirmed config yet${s.nginx.lastError ? `: ${s.nginx.lastError}` : ""}${s.waiting ? `; ${s.waiting}` : ""}`,
    };
  // Waiting for a source of truth, or with a routing change pending, nginx still serves what is in force: ready.
  const notes = [
    ...(s.waiting ? [s.waiting] : []),
    ...(s.services.pending
      ? [`a routing change is pending (nginx refused it; retried): ${s.services.pending.error}`]
      : []),
  ];
  return { ready: true, why: [`nginx runs generation ${s.nginx.generation}`, ...notes].join("; ") };
}

/** Traffic of one endpoint of a route: running totals and rates over the recent window. */
export interface EndpointTraffic {
  readonly requests: number;
  readonly errors: number;
  readonly requestsPerSecond: number;
  /** Failed requests per second (connection error, timeout, 5xx). */
  readonly errorsPerSecond: number;
}

/** Traffic of one route over the recent window. */
export interface RouteTraffic {
  readonly requests: number;
  readonly requestsPerSecond: number;
  /** Share of 5xx answers over the window (0..1); null without requests in the window. */
  readonly errorRate: number | null;
  readonly byClass: RouteTotals["byClass"];
  /** By endpoint address (the route's current endpoints that saw traffic). */
  readonly endpoints: ReadonlyMap<string, EndpointTraffic>;
}

/** Request and error rates from two samples of the running totals. */
export function rates(
  older: { at: number; totals: ReadonlyMap<string, RouteTotals> } | undefined,
  newer: { at: number; totals: ReadonlyMap<string, RouteTotals> },
): Map<string, RouteTraffic> {
  const out = new Map<string, RouteTraffic>();
  const seconds = older ? Math.max((newer.at - older.at) / 1000, 0.001) : 1;
  const perSecond = (n: number) => Math.round((n / seconds) * 100) / 100;
  for (const [upstream, now] of newer.totals) {
    const before = older?.totals.get(upstream);
    // A route missing from the older sample is newer than it: its counters started at zero in between.
    const requests = older ? now.requests - (before?.requests ?? 0) : 0;
    const errors = older ? now.errors - (before?.errors ?? 0) : 0;
    const endpoints = new Map<string, EndpointTraffic>();
    for (const [addr, e] of now.endpoints) {
      const was = before?.endpoints.get(addr);
      endpoints.set(addr, {
        requests: e.requests,
        errors: e.errors,
        requestsPerSecond: older ? perSecond(e.requests - (was?.requests ?? 0)) : 0,
        errorsPerSecond: older ? perSecond(e.errors - (was?.errors ?? 0)) : 0,
      });
    }
    out.set(upstream, {
      requests: now.requests,
      requestsPerSecond: perSecond(requests),
      errorRate: requests > 0 ? Math.round((errors / requests) * 10_000) / 10_000 : null,
      byClass: now.byClass,
      endpoints,
    });
  }
  return out;
}

type TopologyRoute = TopologyServer["routes"][number];

/** A route in the status view: its traffic, and each endpoint's (null before any request reached it; absent from an older controller). */
export type RouteView = Omit<TopologyRoute, "endpoints"> & {
  readonly traffic: Omit<RouteTraffic, "endpoints"> | null;
  readonly endpoints: readonly (TopologyRoute["endpoints"][number] & {
    readonly traffic?: EndpointTraffic | null;
    readonly ejected?: EndpointEjection;
  })[];
};

function routeView(
  r: TopologyRoute,
  traffic: RouteTraffic | undefined,
  ejected: Readonly<Record<string, EndpointEjection>> | undefined,
): RouteView {
  const endpoints = withEjections(r.endpoints, ejected);
  if (!traffic) return { ...r, traffic: null, endpoints: endpoints.map((e) => ({ ...e, traffic: null })) };
  const { endpoints: byAddr, ...rest } = traffic;
  return {
    ...r,
    traffic: rest,
    endpoints: endpoints.map((e) => ({ ...e, traffic: byAddr.get(e.address) ?? null })),
  };
}

/** The JSON of `/api/status` and of every dashboard update. */
export interface StatusView {
  readonly now: string;
  readonly ready: { ready: boolean; why: string };
  readonly startedAt: string;
  readonly services: StatusSnapshot["services"];
  /** Where the routes come from (file, or etcd prefix and revision) and every rejected key; null from an older one. */
  readonly routes?: StatusSnapshot["routes"] | null;
  readonly registry: StatusSnapshot["registry"];
  readonly nginx: StatusSnapshot["nginx"];
  readonly counters: StatusSnapshot["counters"];
  /** Whether state.json can be saved (a full or read-only state dir); null before the first save. */
  readonly persist: NonNullable<StatusSnapshot["persist"]> | null;
  readonly lastSuccessAt: string | null;
  /** Set while an adopted nginx waits for a source of truth before the first apply; null otherwise. */
  readonly waiting?: string | null;
  readonly secondsSinceLastSuccess: number | null;
  readonly servers: readonly (TopologyServer & { readonly routes: readonly RouteView[] })[];
  readonly applies: readonly ApplyRecord[];
}

/**
 * Builds the status view: the snapshot joined with per-route traffic and each endpoint's outlier ejection. Carries no
 * certificate or key.
 */
export function statusView(s: StatusSnapshot, traffic: ReadonlyMap<string, RouteTraffic>, now: Date): StatusView {
  const since = s.lastSuccessAt ? (now.getTime() - Date.parse(s.lastSuccessAt)) / 1000 : null;
  return {
    now: now.toISOString(),
    ready: readiness(s),
    startedAt: s.startedAt,
    services: s.services,
    routes: s.routes ?? null,
    registry: s.registry,
    nginx: s.nginx,
    counters: s.counters,
    persist: s.persist ?? null,
    lastSuccessAt: s.lastSuccessAt ?? null,
    waiting: s.waiting ?? null,
    secondsSinceLastSuccess: since === null ? null : Math.round(since * 10) / 10,
    servers: (s.topology?.servers ?? []).map((server) => ({
      ...server,
      routes: server.routes.map((r) => routeView(r, traffic.get(r.upstream), s.ejections?.[r.upstream])),
    })),
    applies: s.applies,
  };
}

// Inside serialised JSON: up to the END line, or else to the end of the string value (an unescaped quote).
const PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[^"\\]|\\.)*?(?:-----END [A-Z ]*PRIVATE KEY-----|(?="))/g;

/**
 * Serialises a response body, cutting out anything shaped like a private key. The view never holds one; this is
 * the second lock, for an error message that might quote a file.
 */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(PRIVATE_KEY, "[private key redacted]");
}
