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
