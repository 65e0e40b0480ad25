import { z } from "zod";
import { ipFamily } from "../model/ip.js";
import { formatPath, type Checked } from "../model/problem.js";

/**
 * Passive outlier ejection as the controller sees it (pure): nginx's balancer ejects endpoints that fail requests in a
 * row (src/nginx/lua/nginx_lb_outlier.lua) and answers its records on the control server; here they are checked,
 * turned into per-endpoint states with since, until and why, and compared between two reads so that each change is
 * logged once. The controller only shows ejections: the balancer decides them, so nothing here is pushed back.
 */

/** One ejection record as nginx answers it (times in epoch milliseconds, nginx's clock). */
export interface EjectionRecord {
  readonly upstream: string;
  readonly ip: string;
  readonly port: number;
  readonly since: number;
  readonly until: number;
  /** The how-many-th ejection in a row (each lasts twice the one before, up to the maximum). */
  readonly level: number;
  /** Failed requests in a row that led to it (1 when the first request after an ejection failed). */
  readonly failures: number;
  /** The last failure: an upstream status such as "500", "timeout" or "error" (connection failed). */
  readonly last: string;
  /** The ejection ended and a request has succeeded since. */
  readonly returned: boolean;
}

export interface EjectionState {
  /** nginx's clock when it answered (epoch ms). */
  readonly now: number;
  readonly settings: { readonly errors: number; readonly base: number; readonly max: number; readonly percent: number };
  readonly ejections: readonly EjectionRecord[];
}

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const stateSchema = z.strictObject({
  now: int(0),
  settings: z.strictObject({ errors: int(0), base: int(0), max: int(0), percent: int(0, 100) }),
  ejections: z
    .array(
      z.strictObject({
        upstream: z.string().regex(/^nlb_[0-9a-f]+(?:_\d+)?$/, "must be an nlb_<hex> upstream name"),
        ip: z.string().refine((ip) => ipFamily(ip) !== null, "must be a literal IPv4 or IPv6 address"),
        port: int(1, 65535),
        since: int(0),
        until: int(0),
        level: int(1),
        failures: int(1),
        last: z.string().regex(/^(?:[1-5]\d\d|timeout|error)$/, 'must be a status, "timeout" or "error"'),
        returned: z.boolean(),
      }),
    )
    .max(100_000),
});

/** Checks nginx's answer to GET /nginx-lb/ejections; problems name the JSON path. */
export function parseEjections(text: string): Checked<EjectionState> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const message = `not JSON (${e instanceof Error ? e.message : String(e)})`;
    return { ok: false, errors: [{ code: "ejections.json", path: "(answer)", message }], warnings: [] };
  }
  const r = stateSchema.safeParse(json);
  if (r.success) return { ok: true, value: r.data, warnings: [] };
  const errors = r.error.issues.map((i) => ({
    code: "ejections.invalid",
    path: formatPath(i.path),
    message: i.message,
  }));
  return { ok: false, errors, warnings: [] };
}

/** An endpoint ejected by traffic, as the status shows it on the endpoint (times ISO). */
export interface EndpointEjection {
  readonly state: "ejected";
  readonly since: string;
  readonly until: string;
  readonly reason: string;
}

/** The ejected endpoints of each upstream, by endpoint address (`ip:port`, `[ipv6]:port`). */
export type Ejections = Readonly<Record<string, Readonly<Record<string, EndpointEjection>>>>;

export const NO_EJECTIONS: Ejections = {};

/** An endpoint's address as the topology writes it. */
export function endpointAddress(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

const seconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);

/** Why an endpoint is ejected, in words, e.g. "5 failed requests in a row (last: answered 500); ejected for 30 s". */
export function ejectionReason(r: EjectionRecord): string {
  const last = r.last === "timeout" ? "timed out" : r.last === "error" ? "connection failed" : `answered ${r.last}`;
  const what =
    r.level > 1 && r.failures === 1
      ? `its first request after an ejection failed (${last})`
      : `${r.failures} failed request${r.failures === 1 ? "" : "s"} in a row (last: ${last})`;
  const repeat = r.level > 1 ? ` (ejection ${r.level} in a row: each lasts twice the one before)` : "";
  return `${what}; ejected for ${seconds(r.until - r.since)}${repeat}`;
}

/** The endpoints ejected at nginx's `now`: records whose back-off has not ended. */
export function currentEjections(s: EjectionState): Ejections {
  const out: Record<string, Record<string, EndpointEjection>> = {};
  for (const r of s.ejections) {
    if (r.until <= s.now) continue;
    (out[r.upstream] ??= {})[endpointAddress(r.ip, r.port)] = {
      state: "ejected",
      since: new Date(r.since).toISOString(),
      until: new Date(r.until).toISOString(),
      reason: ejectionReason(r),
    };
  }
  return out;
}

/** One change between two reads: an endpoint ejected (newly, or again), or back in rotation. */
export interface EjectionChange {
  readonly kind: "ejected" | "returned";
  readonly upstream: string;
  readonly endpoint: string;
  /** The new ejection (`ejected`) or the one that ended (`returned`). */
  readonly ejection: EndpointEjection;
}

/** What changed from `before` to `after`; an ejection with a new `since` is a new one (re-ejected between reads). */
export function ejectionChanges(before: Ejections, after: Ejections): EjectionChange[] {
  const out: EjectionChange[] = [];
  for (const [upstream, eps] of Object.entries(after))
    for (const [endpoint, ejection] of Object.entries(eps))
      if (before[upstream]?.[endpoint]?.since !== ejection.since)
        out.push({ kind: "ejected", upstream, endpoint, ejection });
  for (const [upstream, eps] of Object.entries(before))
    for (const [endpoint, ejection] of Object.entries(eps))
      if (after[upstream]?.[endpoint] === undefined) out.push({ kind: "returned", upstream, endpoint, ejection });
  return out;
}

/** True when both hold the same ejections (so a read that changed nothing does not touch the status). */
export function sameEjections(a: Ejections, b: Ejections): boolean {
  return ejectionChanges(a, b).length === 0;
}

/** A route's endpoints with their ejection (if any) attached, for the status view. */
export function withEjections<E extends { readonly address: string }>(
  endpoints: readonly E[],
  ejected: Readonly<Record<string, EndpointEjection>> | undefined,
): readonly (E & { readonly ejected?: EndpointEjection })[] {
  if (!ejected) return endpoints;
  return endpoints.map((e) => {
    const ej = ejected[e.address];
    return ej ? { ...e, ejected: ej } : e;
  });
}
