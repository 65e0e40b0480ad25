import type { z } from "zod";
import { type Checked, type Problem, formatPath } from "./problem.js";
import { knownFields, routeKeyMessage, servicesSchema, strictServicesSchema, type ServicesFile } from "./schema.js";
import { PROTO_KEY, durationMs, normalizePrefix, statusRanges } from "./grammar.js";
import { closest } from "./suggest.js";

/** An active health check of a backend's endpoints (services.json `health_check`, defaults applied). */
export interface HealthCheck {
  readonly type: "http" | "tcp";
  /** Request path of an http check (unused by tcp). */
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive passes that bring a down endpoint back. */
  readonly healthy: number;
  /** Consecutive failures that take an endpoint out. */
  readonly unhealthy: number;
  /** Accepted statuses of an http check, as inclusive ranges. */
  readonly expect: readonly (readonly [number, number])[];
  /**
   * The canonical text of the definition: routes whose checks have the same key share one probe per endpoint.
   * A tcp check's key leaves out path and expect, which it does not use.
   */
  readonly key: string;
}

/** A backend reference: the registry name `<app>-<service>`, the port its endpoints listen on, its check if any. */
export interface BackendRef {
  readonly app: string;
  readonly service: string;
  readonly port: number;
  readonly healthCheck?: HealthCheck;
}

/** One route of a server, its prefix normalised (no trailing slash except `/`). */
export interface Route {
  readonly prefix: string;
  readonly primary: BackendRef;
  readonly backendPath: string;
  readonly backup?: BackendRef;
}

export interface Tls {
  readonly port: number;
  readonly certificate: string;
  readonly key: string;
}

/** One virtual server: a host name on a plain port, optionally also on a TLS port. Routes sorted by prefix. */
export interface Server {
  readonly domain: string;
  readonly port: number;
  readonly tls?: Tls;
  readonly routes: readonly Route[];
}

/** The validated routing model. Everything downstream trusts it. */
export interface Services {
  readonly servers: readonly Server[];
}

/** What the TLS check reports about a certificate and key pair; injected so model/ stays free of node:crypto. */
export interface TlsReport {
  readonly errors: readonly { field: "ssl_certificate" | "ssl_certificate_key"; message: string }[];
  readonly warnings: readonly { field: "ssl_certificate" | "ssl_certificate_key"; message: string }[];
}
export type TlsInspector = (certificate: string, key: string, domain: string) => TlsReport;

export interface ParseOptions {
  /** Checks certificates (parse, key match, key strength, dates). Without it certificates are only shape-checked. */
  readonly inspectTls?: TlsInspector;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const k of path) v = typeof v === "object" && v !== null ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function issueToProblem(issue: z.core.$ZodIssue, raw: unknown): Problem {
  const path = formatPath(issue.path);
  if (issue.code === "invalid_key") {
    const inner = issue.issues[0];
    return { code: "invalid_route_key", path, message: inner?.message ?? issue.message };
  }
  if (issue.code === "invalid_type" && issue.path.length === 0)
    return { code: "invalid_type", path, message: `services file must be a JSON object with a "servers" list` };
  const message =
    issue.code === "invalid_type" && valueAt(raw, issue.path) === undefined
      ? `${String(issue.path.at(-1) ?? "value")} is required`
      : issue.message;
  return { code: issue.code, path, message };
}

/** An unknown field: a warning that names the known field it most likely misspells. */
function unknownField(raw: unknown, path: readonly PropertyKey[], key: string): Problem {
  const present = valueAt(raw, path);
  const known = knownFields(path).filter(
    (f) => typeof present !== "object" || present === null || !Object.hasOwn(present, f),
  );
  const guess = closest(key, known);
  return {
    code: "unknown_field",
    path: formatPath([...path, key]),
    message: guess
      ? `unknown field, ignored: did you mean \`${guess}\`?`
      : "unknown field, ignored (check its spelling)",
  };
}

/**
 * Route keys named `__proto__`: JSON.parse keeps one as an own property, but zod's record (like any object copy)
 * skips it, so without this check the route would vanish without a word.
 */
function protoRouteKeys(raw: unknown): Problem[] {
  const servers = valueAt(raw, ["servers"]);
  if (!Array.isArray(servers)) return [];
  return servers.flatMap((_, i) => {
    const routes = valueAt(raw, ["servers", i, "routes"]);
    return typeof routes === "object" && routes !== null && Object.hasOwn(routes, PROTO_KEY)
      ? [
          {
            code: "invalid_route_key",
            path: formatPath(["servers", i, "routes", PROTO_KEY]),
            message: routeKeyMessage(PROTO_KEY),
          },
        ]
      : [];
  });
}

/** Validates a parsed services.json document; reports every error of the file at once, unknown fields as warnings. */
export function parseServices(raw: unknown, options: ParseOptions = {}): Checked<Services> {
  const warnings: Problem[] = [];
  const errors: Problem[] = protoRouteKeys(raw);
  const strict = strictServicesSchema.safeParse(raw);
  if (!strict.success) {
    for (const issue of strict.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) warnings.push(unknownField(raw, issue.path, key));
      } else errors.push(issueToProblem(issue, raw));
    }
  }
  if (errors.length > 0) return { ok: false, errors, warnings };
  // Without unknown fields the strict schema's value is the value (both come from one builder): one pass, not two.
  const file = strict.success ? strict.data : servicesSchema.parse(raw);
  const services = crossCheck(file, errors, warnings, options);
  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, value: services, warnings };
}

function crossCheck(file: ServicesFile, errors: Problem[], warnings: Problem[], options: ParseOptions): Services {
  const servers: Server[] = [];
  // Which server claimed each (port, domain), and how each port is used, for nginx's own refusals.
  const claimed = new Map<string, number>();
  const portUse = new Map<number, { tls: boolean; at: string }>();
  const usePort = (port: number, tls: boolean, at: string) => {
    const seen = portUse.get(port);
    if (seen === undefined) portUse.set(port, { tls, at });
    else if (seen.tls !== tls)
      errors.push({
        code: "port_conflict",
        path: at,
        message: `port ${port} is used for ${tls ? "TLS" : "plain HTTP"} here and for ${seen.tls ? "TLS" : "plain HTTP"} at ${seen.at}; one port serves one protocol: pick another port`,
      });
  };

  file.servers.forEach((s, i) => {
    const at = (...p: PropertyKey[]) => formatPath(["servers", i, ...p]);
    const domain = s.domain_name.toLowerCase();
    const claim = (port: number, field: string) => {
      const key = `${port} ${domain}`;
      const other = claimed.get(key);
      if (other !== undefined)
        errors.push({
          code: "duplicate_server",
          path: at("domain_name"),
          message: `domain ${domain} on port ${port} is already served by servers[${other}]; merge their routes into one server`,
        });
      else claimed.set(key, i);
      usePort(port, field === "ssl_port", at(field));
    };
    claim(s.frontend_port, "frontend_port");

    let tls: Tls | undefined;
    const hasCert = s.ssl_certificate !== undefined;
    const hasKey = s.ssl_certificate_key !== undefined;
    if (hasCert !== hasKey) {
      errors.push({
        code: "tls_incomplete",
        path: at(hasCert ? "ssl_certificate_key" : "ssl_certificate"),
        message: `is required when ${hasCert ? "ssl_certificate" : "ssl_certificate_key"} is given: TLS needs both the certificate and its key`,
      });
    } else if (s.ssl_certificate !== undefined && s.ssl_certificate_key !== undefined) {
      if (s.ssl_port === s.frontend_port)
        errors.push({
          code: "port_conflict",
          path: at("ssl_port"),
          message: `ssl_port ${s.ssl_port} equals frontend_port; one port serves one protocol: pick another port`,
        });
      else claim(s.ssl_port, "ssl_port");
      const report = options.inspectTls?.(s.ssl_certificate, s.ssl_certificate_key, domain);
      for (const e of report?.errors ?? []) errors.push({ code: "tls_invalid", path: at(e.field), message: e.message });
      for (const w of report?.warnings ?? [])
        warnings.push({ code: "tls_warning", path: at(w.field), message: w.message });
      tls = { port: s.ssl_port, certificate: s.ssl_certificate, key: s.ssl_certificate_key };
    }

    const byPrefix = new Map<string, string>();
    const routes: Route[] = [];
    for (const [key, r] of Object.entries(s.routes)) {
      const prefix = normalizePrefix(key);
      const first = byPrefix.get(prefix);
      if (first !== undefined) {
        errors.push({
          code: "duplicate_route",
          path: at("routes", key),
          message: `is the same prefix as ${JSON.stringify(first)} (a trailing "/" does not make a new route); keep one of them`,
        });
        continue;
      }
      byPrefix.set(prefix, key);
      const check = (block: HealthCheckFile | undefined, ...p: PropertyKey[]): { healthCheck?: HealthCheck } => {
        if (block === undefined) return {};
        const healthCheck = toHealthCheck(block);
        if (healthCheck.timeoutMs > healthCheck.intervalMs)
          errors.push({
            code: "check_timeout",
            path: at("routes", key, ...p, "health_check", "timeout"),
            message: `${block.timeout ?? ""} is longer than interval ${block.interval}: a probe must end before the next; shorten timeout or lengthen interval`,
          });
        return { healthCheck };
      };
      const primary: BackendRef = { app: r.app, service: r.service, port: r.port, ...check(r.health_check) };
      let backup: BackendRef | undefined;
      if (r.backup !== undefined) {
        if (r.backup.backend_path !== undefined && r.backup.backend_path !== r.backend_path)
          errors.push({
            code: "backup_path",
            path: at("routes", key, "backup", "backend_path"),
            message: `must equal the route's backend_path ${JSON.stringify(r.backend_path)} (nginx sends one path to the whole upstream); remove it or make them equal`,
          });
        backup = {
          app: r.backup.app,
          service: r.backup.service,
          port: r.backup.port,
          ...check(r.backup.health_check, "backup"),
        };
      }
      routes.push({ prefix, primary, backendPath: r.backend_path, ...(backup ? { backup } : {}) });
    }
    routes.sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
    servers.push({ domain, port: s.frontend_port, ...(tls ? { tls } : {}), routes });
  });
  if (file.servers.length === 0)
    warnings.push({
      code: "no_servers",
      path: "servers",
      message: "is empty: nginx listens on no frontend port, so clients are refused until a server is added",
    });
  return { servers };
}

type HealthCheckFile = NonNullable<ServicesFile["servers"][number]["routes"][string]["health_check"]>;

/** The model of a schema-checked `health_check` block (its grammar already holds). */
function toHealthCheck(b: HealthCheckFile): HealthCheck {
  const intervalMs = durationMs(b.interval) ?? 2000;
  const timeoutMs = (b.timeout !== undefined ? durationMs(b.timeout) : null) ?? Math.min(1000, intervalMs);
  const expect = statusRanges(b.expect) ?? [[200, 399]];
  const shape = b.type === "tcp" ? "tcp" : `http ${b.path} ${expect.map(([lo, hi]) => `${lo}-${hi}`).join(",")}`;
  return {
    type: b.type,
    path: b.path,
    intervalMs,
    timeoutMs,
    healthy: b.healthy,
    unhealthy: b.unhealthy,
    expect,
    key: `${shape} ${intervalMs}ms ${timeoutMs}ms ${b.healthy}/${b.unhealthy}`,
  };
}

/** The registry name of a backend, as keys under /lb/backends/ spell it. */
export function backendName(ref: { app: string; service: string }): string {
  return `${ref.app}-${ref.service}`;
}
