/**
 * The strict grammars every string that can reach nginx.conf must match. They are the injection boundary: nothing
 * outside them is escaped and hoped for, it is rejected. The renderer re-checks each token against these.
 */

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
/** Host name: dot-separated labels, optionally a leading `*.` wildcard. */
export const DOMAIN_RE = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*$`);
export const DOMAIN_MAX = 253;

/** Characters allowed in a URL path segment: unreserved plus a few sub-delims that are inert in nginx.conf. */
const SEGMENT = "[A-Za-z0-9._~!*+,:@=-]+";
/** An absolute URL path: `/`, `/a`, `/a/b/`; no `//`, no quotes, braces, `;`, `$`, `#`, `%` or spaces. */
export const URL_PATH_RE = new RegExp(`^/(?:${SEGMENT}(?:/${SEGMENT})*/?)?$`);
export const URL_PATH_MAX = 1024;

/** App and service names, as the registry key `<app>-<service>` uses them. */
export const NAME_RE = /^[A-Za-z0-9._-]+$/;
export const NAME_MAX = 128;
/** A registry backend name `<app>-<service>`: two names and the `-`, so up to 2 * NAME_MAX + 1 characters. */
export const BACKEND_NAME_MAX = 2 * NAME_MAX + 1;

/** True when a path has a `.` or `..` segment, which nginx would normalise away and so never match. */
export function hasDotSegment(path: string): boolean {
  return path.split("/").some((s) => s === "." || s === "..");
}

/** True for a valid domain_name. */
export function isDomain(text: string): boolean {
  return text.length <= DOMAIN_MAX && DOMAIN_RE.test(text);
}

/** True for a valid absolute URL path (route key or backend_path). */
export function isUrlPath(text: string): boolean {
  return text.length <= URL_PATH_MAX && URL_PATH_RE.test(text) && !hasDotSegment(text);
}

/** True for a valid app or service name. */
export function isName(text: string): boolean {
  return text.length <= NAME_MAX && NAME_RE.test(text);
}

/**
 * The one key a JavaScript object cannot hold as data: assigning it replaces the object's prototype, and copies
 * (zod records, spreads) drop it. Backend names key plain objects, so this name is refused rather than lost.
 */
export const PROTO_KEY = "__proto__";

/** True for a valid backend name `<app>-<service>` (what routes and registry keys name a backend by). */
export function isBackendName(text: string): boolean {
  return text.length <= BACKEND_NAME_MAX && NAME_RE.test(text) && text !== PROTO_KEY;
}

/** The canonical form of a route prefix: no trailing slash except for the root. `/api/` and `/api` are one route. */
export function normalizePrefix(path: string): string {
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

/**
 * A health check's request path: an absolute URL path (as above) and an optional query of the same characters plus
 * `&` and `/`. It reaches the request line of every probe, so nothing that could end or split the line is allowed.
 */
export const CHECK_PATH_RE = new RegExp(`^/(?:${SEGMENT}(?:/${SEGMENT})*/?)?(?:\\?[A-Za-z0-9._~!*+,:@=&/-]*)?$`);
export const CHECK_PATH_MAX = 1024;

/** A duration as health checks spell it: a positive integer and `ms`, `s` or `m`. */
export const DURATION_RE = /^([1-9][0-9]{0,6})(ms|s|m)$/;

/** Milliseconds of a duration matching DURATION_RE, or null. */
export function durationMs(text: string): number | null {
  const m = DURATION_RE.exec(text);
  if (!m) return null;
  return Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "s" ? 1000 : 60_000);
}

/** An HTTP status range list: `200`, `200-399`, `200,204,300-399` (codes 100-599, each range low to high). */
export const STATUS_LIST_RE = /^[1-5][0-9]{2}(?:-[1-5][0-9]{2})?(?:,[1-5][0-9]{2}(?:-[1-5][0-9]{2})?){0,31}$/;

/** The ranges of a status list matching STATUS_LIST_RE, or null when a range runs high to low. */
export function statusRanges(text: string): [number, number][] | null {
  if (!STATUS_LIST_RE.test(text)) return null;
  const ranges = text.split(",").map((part): [number, number] => {
    const [lo, hi = lo] = part.split("-").map(Number) as [number, number?];
    return [lo, hi];
  });
  return ranges.every(([lo, hi]) => lo <= hi) ? ranges : null;
}
