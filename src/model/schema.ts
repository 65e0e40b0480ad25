import { z } from "zod";
import { describeValue } from "./problem.js";
import {
  CHECK_PATH_MAX,
  CHECK_PATH_RE,
  DOMAIN_MAX,
  DOMAIN_RE,
  NAME_MAX,
  NAME_RE,
  URL_PATH_MAX,
  URL_PATH_RE,
  durationMs,
  hasDotSegment,
  statusRanges,
} from "./grammar.js";

/**
 * The zod schema of services.json (format version "0.1", as the original csphere deployment wrote it).
 * It checks shape and grammar field by field; cross-field rules live in services.ts. `strict` turns unknown fields
 * into issues, which the caller reports as warnings.
 */

type Issue = { input?: unknown };
const got = (iss: Issue): string => `got ${describeValue(iss.input)}`;

const port = (what: string) => {
  const msg = (iss: Issue) => `${what} must be an integer from 1 to 65535, ${got(iss)}`;
  return z.int({ error: msg }).min(1, { error: msg }).max(65535, { error: msg });
};

const name = (field: string) => {
  const msg = (iss: Issue) => `${field} must be 1-${NAME_MAX} characters of A-Z a-z 0-9 . _ -, ${got(iss)}`;
  return z.string({ error: msg }).max(NAME_MAX, { error: msg }).regex(NAME_RE, { error: msg });
};

const urlPath = (field: string) => {
  const msg = (iss: Issue) =>
    `${field} must be an absolute URL path of letters, digits and . _ ~ ! * + , : @ = - separated by single "/" ` +
    `(no spaces, quotes, ; $ # % { }, no "." or ".." segments), ${got(iss)}`;
  return z
    .string({ error: msg })
    .max(URL_PATH_MAX, { error: msg })
    .regex(URL_PATH_RE, { error: msg })
    .refine((s) => !hasDotSegment(s), { error: msg });
};

/** Bounds of a health check's durations: fast enough to test, slow enough not to flood an endpoint. */
export const CHECK_INTERVAL_MS = { min: 100, max: 10 * 60_000 } as const;
export const CHECK_TIMEOUT_MS = { min: 10, max: 60_000 } as const;

const duration = (field: string, bounds: { min: number; max: number }) => {
  const msg = (iss: Issue) =>
    `${field} must be a duration like "500ms", "2s" or "1m" from ${bounds.min}ms to ${bounds.max / 60_000}m, ${got(iss)}`;
  return z.string({ error: msg }).refine(
    (s) => {
      const ms = durationMs(s);
      return ms !== null && ms >= bounds.min && ms <= bounds.max;
    },
    { error: msg },
  );
};

const count = (field: string) => {
  const msg = (iss: Issue) => `${field} must be an integer from 1 to 100, ${got(iss)}`;
  return z.int({ error: msg }).min(1, { error: msg }).max(100, { error: msg });
};

const checkPath = () => {
  const msg = (iss: Issue) =>
    `path must be an absolute URL path of letters, digits and . _ ~ ! * + , : @ = - separated by single "/", ` +
    `optionally with a query of the same characters and & / (no spaces, quotes, % or #), ${got(iss)}`;
  return z
    .string({ error: msg })
    .max(CHECK_PATH_MAX, { error: msg })
    .regex(CHECK_PATH_RE, { error: msg })
    .refine((s) => !hasDotSegment(s.split("?")[0] ?? s), { error: msg });
};

const statusList = () => {
  const msg = (iss: Issue) =>
    `expect must be HTTP status codes or ranges from 100 to 599 separated by commas, like "200-399" or "200,204", ${got(iss)}`;
  return z.string({ error: msg }).refine((s) => statusRanges(s) !== null, { error: msg });
};

/** Why a route key is refused (zod skips a `__proto__` record key, so services.ts reports that one itself). */
export const routeKeyMessage = (key: unknown): string =>
  `route key must be an absolute URL path of letters, digits and . _ ~ ! * + , : @ = - separated by single "/" ` +
  `(no spaces, quotes, ; $ # % { }, no "." or ".." segments), ${got({ input: key })}`;

const routeKey = () => {
  const msg = (iss: Issue) => routeKeyMessage(iss.input);
  return z
    .string()
    .max(URL_PATH_MAX, { error: msg })
    .regex(URL_PATH_RE, { error: msg })
    .refine((s) => !hasDotSegment(s), { error: msg });
};

/** The message for an encrypted private key: nginx would stop at start-up to ask for its passphrase. */
export const ENCRYPTED_KEY_MESSAGE =
  "the key is encrypted: nginx-lb needs an unencrypted key; decrypt it with `openssl pkey -in key.pem -out plain.pem`";

/** True for PEM text of an encrypted private key (PKCS#8 or the traditional OpenSSL header). */
export function isEncryptedPem(text: string): boolean {
  return /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type:\s*4,ENCRYPTED/m.test(text);
}

const pem = (field: string, label: string) => {
  // Never quotes the value: a malformed private key would otherwise reach logs and the status API.
  const msg = (iss: Issue) =>
    `${field} must be the PEM text of ${label} (a string starting "-----BEGIN"), got ${typeof iss.input === "string" ? `a string of ${iss.input.length} characters` : describeValue(iss.input)}`;
  return z
    .string({ error: msg })
    .max(1 << 20, { error: `${field} is larger than 1 MiB` })
    .regex(/^\s*-----BEGIN [A-Z0-9 ]+-----[\s\S]+-----END [A-Z0-9 ]+-----\s*$/, { error: msg });
};

function build(strict: boolean) {
  const obj = <S extends z.ZodRawShape>(shape: S) => (strict ? z.strictObject(shape) : z.object(shape));

  const healthCheck = obj({
    type: z
      .enum(["http", "tcp"], { error: (iss) => `type must be "http" or "tcp", ${got(iss)}` })
      .default("http")
      .describe('"http": a GET of path must answer a status in expect; "tcp": a connection must open. Default "http".'),
    path: checkPath()
      .default("/healthz")
      .describe('Request path of an http check (Host: nginx-lb-health). Default "/healthz".'),
    interval: duration("interval", CHECK_INTERVAL_MS)
      .default("2s")
      .describe('Time between probes of one endpoint, like "500ms", "2s", "1m". Default "2s".'),
    timeout: duration("timeout", CHECK_TIMEOUT_MS)
      .optional()
      .describe('A probe that takes longer fails. At most interval. Default "1s", or interval if that is shorter.'),
    healthy: count("healthy").default(2).describe("Consecutive passes that bring a down endpoint back. Default 2."),
    unhealthy: count("unhealthy").default(3).describe("Consecutive failures that take an endpoint out. Default 3."),
    expect: statusList()
      .default("200-399")
      .describe('Statuses an http check accepts: codes and ranges, like "200-399" or "200,204". Default "200-399".'),
  }).describe("Active health check of the endpoints; the block turns checks on, every field has a default.");

  const backup = obj({
    app: name("app"),
    service: name("service"),
    port: port("port").default(80).describe("Port the backup endpoints listen on. Default 80, as for a route."),
    backend_path: urlPath("backend_path")
      .optional()
      .describe("Must equal the route's backend_path if given: nginx sends one path to a whole upstream."),
    health_check: healthCheck.optional(),
  }).describe("A service whose endpoints serve only when every primary endpoint has failed.");

  const route = obj({
    app: name("app").describe("Application name; with service it names the registry key <app>-<service>."),
    service: name("service").describe("Service name within the application."),
    port: port("port").default(80).describe("Port the backend endpoints listen on. Default 80."),
    backend_path: urlPath("backend_path")
      .default("/")
      .describe('Path prefix on the backend that replaces the route prefix. Default "/".'),
    backup: backup.optional(),
    health_check: healthCheck.optional(),
  });

  const domainMsg = (iss: Issue) =>
    `domain_name must be a host name (letters, digits, hyphens, dot-separated labels of at most 63 characters, ` +
    `optionally starting with "*."), ${got(iss)}`;
  const server = obj({
    domain_name: z
      .string({ error: domainMsg })
      .max(DOMAIN_MAX, { error: domainMsg })
      .regex(DOMAIN_RE, { error: domainMsg })
      .describe("Host name this server answers, matched against the Host header (or SNI). `*.` wildcard allowed."),
    frontend_port: port("frontend_port").default(80).describe("Plain HTTP port. Default 80."),
    ssl_certificate: pem("ssl_certificate", "an X.509 certificate (optionally followed by its chain)")
      .optional()
      .describe("PEM certificate; with ssl_certificate_key enables TLS on ssl_port."),
    ssl_certificate_key: pem("ssl_certificate_key", "the certificate's private key")
      .refine((k) => !isEncryptedPem(k), { error: ENCRYPTED_KEY_MESSAGE, abort: true })
      .optional()
      .describe("PEM private key of ssl_certificate, unencrypted, RSA >= 2048 bits or EC >= 224 bits."),
    ssl_port: port("ssl_port").default(443).describe("TLS port, used when a certificate is given. Default 443."),
    routes: z
      .record(routeKey(), route.describe("Where requests under this URL prefix go."))
      .default({})
      .describe("URL prefix (absolute path; `/a` and `/a/` are the same route) -> backend."),
  });

  const file = obj({
    $schema: z.string().optional(),
    version: z
      .literal("0.1", { error: (iss) => `version must be "0.1" (the only format version), ${got(iss)}` })
      .default("0.1"),
    servers: z
      .array(server, { error: (iss) => `servers must be a list of servers, ${got(iss)}` })
      .describe("Virtual servers, one per domain_name and port."),
  });
  return { file, fields: { file, server, route, backup, healthCheck } };
}

const strict = build(true);
/** The schema that reports unknown fields as issues (used to collect warnings). */
export const strictServicesSchema = strict.file;
/** One server of the file, unknown fields as issues: a server checked alone (as `servicesSchema` checks each). */
export const strictServerSchema = strict.fields.server;
/** The schema that ignores unknown fields (used to produce the value). */
export const servicesSchema = build(false).file;

const { file, server, route, backup, healthCheck } = strict.fields;
/**
 * Field names by the path of each object of the file: `servers[0]` is 2 deep, `servers[0].routes["/"]` 4, its
 * `backup` 5 deep; a route's `health_check` is 5 deep too and a backup's 6, told apart by the last key.
 */
const FIELDS_AT_DEPTH = new Map<number, readonly string[]>(
  (
    [
      [0, file],
      [2, server],
      [4, route],
      [5, backup],
    ] as const
  ).map(([depth, o]) => [depth, Object.keys(o.shape)]),
);

/** The field names the object at `path` may have, for "did you mean" on an unknown field. */
export function knownFields(path: readonly PropertyKey[]): readonly string[] {
  if (path.at(-1) === "health_check") return Object.keys(healthCheck.shape);
  return FIELDS_AT_DEPTH.get(path.length) ?? [];
}

/** services.json as written, after defaults. */
export type ServicesFile = z.output<typeof servicesSchema>;

/** The JSON Schema of services.json, for editors. */
export function servicesJsonSchema(): unknown {
  return {
    ...z.toJSONSchema(servicesSchema, { io: "input", unrepresentable: "any" }),
    title: "nginx-lb services.json",
  };
}
