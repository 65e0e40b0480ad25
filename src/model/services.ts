import type { z } from "zod";
import { type Checked, type Problem, formatPath } from "./problem.js";
import {
  knownFields,
  routeKeyMessage,
  servicesSchema,
  strictServerSchema,
  strictServicesSchema,
  type ServicesFile,
} from "./schema.js";
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
  const services = assemble(
    file.servers.map((s) => checkServer(s, options)),
    errors,
    warnings,
  );
  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, value: services, warnings };
}

/** A problem of one server, its path relative to the server (`servers[i]` is prefixed when the file is assembled). */
interface ServerProblem {
  readonly error: boolean;
  readonly code: string;
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

/** One step of a server's checks, in the order the file reports them: a problem, or a claim of (port, domain). */
type ServerStep = ServerProblem | { readonly claim: number; readonly field: "frontend_port" | "ssl_port" };

/**
 * One schema-checked server checked on its own (pure in the server and the TLS inspector): its model value and the
 * steps the file-level checks replay in order. What depends on other servers (a (port, domain) claimed twice, a port
 * used for both protocols) is left to `assembleServers`, so an unchanged server's check can be reused as is.
 */
export interface ServerCheck {
  readonly server: Server;
  readonly steps: readonly ServerStep[];
}

type ServerFile = ServicesFile["servers"][number];

function checkServer(s: ServerFile, options: ParseOptions): ServerCheck {
  const steps: ServerStep[] = [];
  const error = (code: string, path: readonly PropertyKey[], message: string) =>
    steps.push({ error: true, code, path, message });
  const domain = s.domain_name.toLowerCase();
  steps.push({ claim: s.frontend_port, field: "frontend_port" });

  let tls: Tls | undefined;
  const hasCert = s.ssl_certificate !== undefined;
  const hasKey = s.ssl_certificate_key !== undefined;
  if (hasCert !== hasKey) {
    error(
      "tls_incomplete",
      [hasCert ? "ssl_certificate_key" : "ssl_certificate"],
      `is required when ${hasCert ? "ssl_certificate" : "ssl_certificate_key"} is given: TLS needs both the certificate and its key`,
    );
  } else if (s.ssl_certificate !== undefined && s.ssl_certificate_key !== undefined) {
    if (s.ssl_port === s.frontend_port)
      error(
        "port_conflict",
        ["ssl_port"],
        `ssl_port ${s.ssl_port} equals frontend_port; one port serves one protocol: pick another port`,
      );
    else steps.push({ claim: s.ssl_port, field: "ssl_port" });
    const report = options.inspectTls?.(s.ssl_certificate, s.ssl_certificate_key, domain);
    for (const e of report?.errors ?? []) error("tls_invalid", [e.field], e.message);
    for (const w of report?.warnings ?? [])
      steps.push({ error: false, code: "tls_warning", path: [w.field], message: w.message });
    tls = { port: s.ssl_port, certificate: s.ssl_certificate, key: s.ssl_certificate_key };
  }

  const byPrefix = new Map<string, string>();
  const routes: Route[] = [];
  for (const [key, r] of Object.entries(s.routes)) {
    const prefix = normalizePrefix(key);
    const first = byPrefix.get(prefix);
    if (first !== undefined) {
      error(
        "duplicate_route",
        ["routes", key],
        `is the same prefix as ${JSON.stringify(first)} (a trailing "/" does not make a new route); keep one of them`,
      );
      continue;
    }
    byPrefix.set(prefix, key);
    const check = (block: HealthCheckFile | undefined, ...p: PropertyKey[]): { healthCheck?: HealthCheck } => {
      if (block === undefined) return {};
      const healthCheck = toHealthCheck(block);
      if (healthCheck.timeoutMs > healthCheck.intervalMs)
        error(
          "check_timeout",
          ["routes", key, ...p, "health_check", "timeout"],
          `${block.timeout ?? ""} is longer than interval ${block.interval}: a probe must end before the next; shorten timeout or lengthen interval`,
        );
      return { healthCheck };
    };
    const primary: BackendRef = { app: r.app, service: r.service, port: r.port, ...check(r.health_check) };
    let backup: BackendRef | undefined;
    if (r.backup !== undefined) {
      if (r.backup.backend_path !== undefined && r.backup.backend_path !== r.backend_path)
        error(
          "backup_path",
          ["routes", key, "backup", "backend_path"],
          `must equal the route's backend_path ${JSON.stringify(r.backend_path)} (nginx sends one path to the whole upstream); remove it or make them equal`,
        );
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
  return { server: { domain, port: s.frontend_port, ...(tls ? { tls } : {}), routes }, steps };
}

/**
 * Checks one raw server (a parsed `servers[i]`) alone, for a caller that keeps checks of unchanged servers: null when
 * the schema has anything to say about it (an error or an unknown field) or a route key is `__proto__`; such a file
 * takes the whole-file path (`parseServices`), which words every problem with its place among the others.
 */
export function checkRawServer(raw: unknown, options: ParseOptions = {}): ServerCheck | null {
  if (protoRouteKeys({ servers: [raw] }).length > 0) return null;
  const strict = strictServerSchema.safeParse(raw);
  return strict.success ? checkServer(strict.data, options) : null;
}

/**
 * Whether the file's fields other than `servers` pass the schema without a word (`raw` a parsed file whose `servers`
 * is a list); the servers are checked one by one (checkRawServer).
 */
export function cleanFileFields(raw: Readonly<Record<string, unknown>>): boolean {
  return strictServicesSchema.safeParse({ ...raw, servers: [] }).success;
}

/**
 * The file of these server checks, in order (pure): the cross-server checks replayed, every problem with its JSON
 * path. For a file whose fields other than `servers` are clean (cleanFileFields) and whose servers each checked clean
 * (checkRawServer), equal to `parseServices` of the whole file.
 */
export function assembleServers(checks: readonly ServerCheck[]): Checked<Services> {
  const errors: Problem[] = [];
  const warnings: Problem[] = [];
  const services = assemble(checks, errors, warnings);
  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, value: services, warnings };
}

function assemble(checks: readonly ServerCheck[], errors: Problem[], warnings: Problem[]): Services {
  // Which server claimed each (port, domain), and how each port is used, for nginx's own refusals.
  // By port, then domain: no key string is built per server (a changed services file is assembled again in full).
  const claimed = new Map<number, Map<string, number>>();
  const portUse = new Map<number, { tls: boolean; at: string }>();
  const servers: Server[] = [];
  checks.forEach(({ server, steps }, i) => {
    for (const step of steps) {
      if (!("claim" in step)) {
        (step.error ? errors : warnings).push({
          code: step.code,
          path: formatPath(["servers", i, ...step.path]),
          message: step.message,
        });
        continue;
      }
      const { claim: port, field } = step;
      let onPort = claimed.get(port);
      if (onPort === undefined) claimed.set(port, (onPort = new Map()));
      const other = onPort.get(server.domain);
      if (other !== undefined)
        errors.push({
          code: "duplicate_server",
          path: formatPath(["servers", i, "domain_name"]),
          message: `domain ${server.domain} on port ${port} is already served by servers[${other}]; merge their routes into one server`,
        });
      else onPort.set(server.domain, i);
      const tls = field === "ssl_port";
      const seen = portUse.get(port);
      if (seen === undefined) portUse.set(port, { tls, at: formatPath(["servers", i, field]) });
      else if (seen.tls !== tls)
        errors.push({
          code: "port_conflict",
          path: formatPath(["servers", i, field]),
          message: `port ${port} is used for ${tls ? "TLS" : "plain HTTP"} here and for ${seen.tls ? "TLS" : "plain HTTP"} at ${seen.at}; one port serves one protocol: pick another port`,
        });
    }
    servers.push(server);
  });
  if (checks.length === 0)
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
