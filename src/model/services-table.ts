import type { Problem } from "./problem.js";
import { parseServices, type ParseOptions, type Server, type Services } from "./services.js";

/**
 * The routing table kept in etcd: one key per server, `<prefix>/<domain>:<frontend_port>`, whose value is that
 * server's object exactly as in services.json's `servers` array. Each key is validated on its own with the file's
 * code, so one bad key never takes the others down; the rules between servers (one domain per port, a port plain or
 * TLS) are then resolved in a fixed order: the key created first wins.
 */

/** One key as etcd holds it. */
export interface TableEntry {
  readonly key: string;
  readonly value: string;
  /** etcd's create_revision of the key: the order in which conflicts are resolved. */
  readonly createRevision: number;
}

/** A key's last version that passed validation on its own. */
export interface ValidServer {
  readonly server: Server;
  readonly createRevision: number;
  /** The raw value it was parsed from: a later identical value needs no second parse. */
  readonly value: string;
}

export interface RejectedKey {
  readonly key: string;
  readonly problems: readonly Problem[];
  /** True when the key's last valid version still serves. */
  readonly keptLastValid: boolean;
}

export interface ServicesTable {
  /** The servers in force, in key order. */
  readonly services: Services;
  readonly rejected: readonly RejectedKey[];
  readonly warnings: readonly Problem[];
  /** Every key's last valid version, to pass back in with the next entries. */
  readonly valid: ReadonlyMap<string, ValidServer>;
}

/** The key directory of a prefix: `/lb/services` -> `/lb/services/`. */
export function tableDir(prefix: string): string {
  return prefix.endsWith("/") ? prefix : `${prefix}/`;
}

/** The key of a server: `<prefix>/<domain, lower case>:<frontend_port>`. */
export function serverKey(prefix: string, domain: string, port: number): string {
  return `${tableDir(prefix)}${domain.toLowerCase()}:${port}`;
}

/** `servers[0].routes["/"]` -> `<key>.routes["/"]`: problems name the key, then the path inside its value. */
function atKey(key: string, p: Problem): Problem {
  const rest = p.path.replace(/^servers\[0\]/, "");
  const path = rest === "" || rest === "(file)" || rest === "servers" ? key : `${key}${rest}`;
  return { ...p, path };
}

/** Validates one key on its own: its JSON, its server object (TLS checks included when given) and its name. */
export function parseTableEntry(prefix: string, key: string, value: string, options: ParseOptions = {}) {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch (e) {
    // V8's message may quote the value, which can hold a private key: keep only its words before any quote.
    const why = (e as Error).message.split(/[,:]?\s*["']/)[0] ?? "";
    return {
      ok: false as const,
      problems: [{ code: "invalid_json", path: key, message: `the value is not valid JSON (${why})` }],
    };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    return {
      ok: false as const,
      problems: [
        { code: "invalid_type", path: key, message: "must be one server object, as in services.json's servers" },
      ],
    };
  const parsed = parseServices({ version: "0.1", servers: [raw] }, options);
  if (!parsed.ok)
    return { ok: false as const, problems: [...parsed.errors.map((p) => atKey(key, p))], warnings: parsed.warnings };
  const server = parsed.value.servers[0] as Server;
  const expected = serverKey(prefix, server.domain, server.port);
  if (key.toLowerCase() !== expected)
    return {
      ok: false as const,
      problems: [
        {
          code: "key_mismatch",
          path: key,
          message: `the key must name its server's domain_name and frontend_port: ${expected}`,
        },
      ],
    };
  return { ok: true as const, server, warnings: parsed.warnings.map((p) => atKey(key, p)) };
}

const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The table in force from etcd's keys. A key that fails validation keeps its last valid version from `lastValid`
 * (or stays absent); of two keys that conflict, the one with the lower create revision wins (then the lower key).
 * Pure: same entries and last valid versions, same table.
 */
export function buildServicesTable(
  prefix: string,
  entries: readonly TableEntry[],
  lastValid: ReadonlyMap<string, ValidServer> = new Map(),
  options: ParseOptions = {},
): ServicesTable {
  const valid = new Map<string, ValidServer>();
  const rejected: RejectedKey[] = [];
  const warnings: Problem[] = [];
  for (const e of [...entries].sort((a, b) => byKey(a.key, b.key))) {
    const last = lastValid.get(e.key);
    if (last && last.value === e.value) {
      valid.set(e.key, { ...last, createRevision: e.createRevision });
      continue;
    }
    const r = parseTableEntry(prefix, e.key, e.value, options);
    if (r.ok) {
      valid.set(e.key, { server: r.server, createRevision: e.createRevision, value: e.value });
      warnings.push(...r.warnings);
    } else {
      // A key deleted and created again is another server: its old version is not kept.
      const keep = last && last.createRevision === e.createRevision ? last : undefined;
      if (keep) valid.set(e.key, keep);
      rejected.push({ key: e.key, problems: r.problems, keptLastValid: keep !== undefined });
    }
  }
  const order = [...valid.entries()].sort(([ka, a], [kb, b]) => a.createRevision - b.createRevision || byKey(ka, kb));
  const claimed = new Map<string, string>();
  const portUse = new Map<number, { tls: boolean; key: string }>();
  const inForce = new Map<string, Server>();
  for (const [key, { server }] of order) {
    const claims = [{ port: server.port, tls: false }, ...(server.tls ? [{ port: server.tls.port, tls: true }] : [])];
    const problems: Problem[] = [];
    for (const c of claims) {
      const owner = claimed.get(`${c.port} ${server.domain}`);
      if (owner !== undefined)
        problems.push({
          code: "duplicate_server",
          path: key,
          message: `domain ${server.domain} on port ${c.port} is already served by ${owner} (written first); delete one of them`,
        });
      const use = portUse.get(c.port);
      if (use !== undefined && use.tls !== c.tls)
        problems.push({
          code: "port_conflict",
          path: key,
          message: `port ${c.port} is used for ${c.tls ? "TLS" : "plain HTTP"} here and for ${use.tls ? "TLS" : "plain HTTP"} by ${use.key} (written first); one port serves one protocol`,
        });
    }
    if (problems.length > 0) {
      const already = rejected.findIndex((r) => r.key === key);
      // Its last valid version lost too: the server is absent.
      if (already >= 0) {
        const r = rejected[already] as RejectedKey;
        rejected[already] = { key, problems: [...r.problems, ...problems], keptLastValid: false };
      } else rejected.push({ key, problems, keptLastValid: false });
      continue;
    }
    for (const c of claims) {
      claimed.set(`${c.port} ${server.domain}`, key);
      if (!portUse.has(c.port)) portUse.set(c.port, { tls: c.tls, key });
    }
    inForce.set(key, server);
  }
  const servers = [...inForce.entries()].sort(([a], [b]) => byKey(a, b)).map(([, s]) => s);
  rejected.sort((a, b) => byKey(a.key, b.key));
  return { services: { servers }, rejected, warnings, valid };
}
