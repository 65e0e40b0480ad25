import { canonicalIp } from "./ip.js";
import { PROTO_KEY, isBackendName } from "./grammar.js";
import { type Checked, type Problem, describeValue } from "./problem.js";

/** One endpoint of a backend. Weight 0 means drained: rendered `down`, sent no traffic. */
export interface Endpoint {
  readonly weight: number;
}

/** A snapshot of the registry: backend name `<app>-<service>` -> ip -> endpoint. Plain JSON, so it persists as is. */
export type BackendSet = Readonly<Record<string, Readonly<Record<string, Endpoint>>>>;

export const WEIGHT_MAX = 1000;
export const DEFAULT_PREFIX = "/lb/backends";

/** The outcome of reading one registry key/value. */
export type KeyReading =
  | {
      readonly kind: "endpoint";
      readonly name: string;
      readonly ip: string;
      readonly endpoint: Endpoint;
      readonly warning?: string;
    }
  | { readonly kind: "rejected"; readonly reason: string };

/** The prefix with exactly one trailing slash, so `/lb/backends` never matches `/lb/backends-old/...`. */
export function keyPrefix(prefix: string): string {
  return prefix.endsWith("/") ? prefix : `${prefix}/`;
}

/** Reads `<prefix>/<app>-<service>/ips/<ip>` = `{"weight":50}` into an endpoint, or says why it is not one. */
export function parseEndpointKey(key: string, value: string, prefix: string = DEFAULT_PREFIX): KeyReading {
  const base = keyPrefix(prefix);
  if (!key.startsWith(base)) return { kind: "rejected", reason: `key is outside the prefix ${base}` };
  // Exactly `<name>/ips/<ip>` after the prefix, found by position (a list reads 100,000 keys: no array per key).
  const slash = key.indexOf("/", base.length);
  if (slash < 0 || !key.startsWith("/ips/", slash) || key.indexOf("/", slash + 5) >= 0)
    return { kind: "rejected", reason: `key is not of the form ${base}<app>-<service>/ips/<ip>` };
  return readEndpoint(key.slice(base.length, slash), key.slice(slash + 5), () => parseWeight(value));
}

/** An endpoint from its backend name and address (checked here) and its weight, read only when both pass. */
function readEndpoint(name: string, ip: string, weightOf: () => { weight: number; warning?: string }): KeyReading {
  if (name === PROTO_KEY)
    return {
      kind: "rejected",
      reason: `backend name "${PROTO_KEY}" is reserved: routes name backends <app>-<service>`,
    };
  if (!isBackendName(name))
    return { kind: "rejected", reason: `backend name ${describeValue(name)} must be characters of A-Z a-z 0-9 . _ -` };
  const canonical = canonicalIp(ip);
  if (canonical === null)
    return {
      kind: "rejected",
      reason: `${describeValue(ip)} is not a literal IPv4 or IPv6 address (no host names, ports or zones)`,
    };
  const { weight, warning } = weightOf();
  return { kind: "endpoint", name, ip: canonical, endpoint: { weight }, ...(warning ? { warning } : {}) };
}

/** `{"weight":N}` with N a JSON integer of up to 4 digits (JSON allows no leading zeros). */
const PLAIN_WEIGHT = /^\{"weight":(0|[1-9][0-9]{0,3})\}$/;

/** Reads the value's weight: an integer 0..1000; anything else is weight 1 with a warning. */
export function parseWeight(value: string): { weight: number; warning?: string } {
  // The value as registrars write it, read without building an object (a list reads 100,000 of them); anything
  // else, spaces included, goes through JSON.parse.
  const plain = PLAIN_WEIGHT.exec(value);
  if (plain !== null && Number(plain[1]) <= WEIGHT_MAX) return { weight: Number(plain[1]) };
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return { weight: 1, warning: `value ${describeValue(value)} is not JSON; using weight 1` };
  }
  return weightOf(parsed, () => value);
}

/** The weight of a parsed value; `text` is the value as written, for the warnings (made only when one is needed). */
function weightOf(parsed: unknown, text: () => string): { weight: number; warning?: string } {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    return { weight: 1, warning: `value ${describeValue(text())} is not a JSON object; using weight 1` };
  const w = (parsed as Record<string, unknown>)["weight"];
  if (w === undefined) return { weight: 1, warning: `value has no "weight"; using weight 1` };
  if (typeof w !== "number" || !Number.isInteger(w) || w < 0 || w > WEIGHT_MAX)
    return {
      weight: 1,
      warning: `weight must be an integer from 0 to ${WEIGHT_MAX}, got ${describeValue(w)}; using weight 1`,
    };
  return { weight: w };
}

/** Builds a backend set from registry key/values; rejected keys become warnings naming the key. */
export function backendSetFromKeys(
  entries: Iterable<readonly [string, string]>,
  prefix: string = DEFAULT_PREFIX,
): { set: BackendSet; warnings: Problem[] } {
  // A Map, not an object: a backend named like an Object.prototype member ("constructor") must not find it.
  const byName = new Map<string, Record<string, Endpoint>>();
  const warnings: Problem[] = [];
  for (const [key, value] of entries) {
    const r = parseEndpointKey(key, value, prefix);
    if (r.kind === "rejected") {
      warnings.push({ code: "registry_key_rejected", path: key, message: r.reason });
      continue;
    }
    if (r.warning) warnings.push({ code: "registry_value", path: key, message: r.warning });
    let eps = byName.get(r.name);
    if (!eps) byName.set(r.name, (eps = {}));
    eps[r.ip] = r.endpoint;
  }
  return { set: sortBackendSet(Object.fromEntries(byName)), warnings };
}

/** One backend's endpoints in ip order (fresh records), so equal sets serialise identically. */
export function sortEndpoints(eps: Readonly<Record<string, Endpoint>>): Record<string, Endpoint> {
  const sorted: Record<string, Endpoint> = {};
  for (const ip of Object.keys(eps).sort()) sorted[ip] = { weight: eps[ip]?.weight ?? 1 };
  return sorted;
}

/** The same set with names and ips in sorted order, so equal sets serialise identically. */
export function sortBackendSet(set: BackendSet): BackendSet {
  const out: Record<string, Record<string, Endpoint>> = {};
  for (const name of Object.keys(set).sort()) {
    const sorted = sortEndpoints(set[name] ?? {});
    if (Object.keys(sorted).length > 0) out[name] = sorted;
  }
  return out;
}

/**
 * One endpoint of the backends file, read as the registry key `<prefix>/<name>/ips/<ip>` with the value `ep` is: a
 * name or address with a "/" is no such key.
 */
function fileEndpoint(name: string, ip: string, ep: unknown): KeyReading {
  if (name.includes("/") || ip.includes("/"))
    return { kind: "rejected", reason: `key is not of the form ${keyPrefix(DEFAULT_PREFIX)}<app>-<service>/ips/<ip>` };
  return readEndpoint(name, ip, () => weightOf(ep ?? null, () => JSON.stringify(ep ?? null)));
}

/**
 * Validates the embedded registry file `{ "<app>-<service>": { "<ip>": { "weight": 50 } } }` with the same rules as
 * etcd keys. Bad names or addresses are errors (the file is the operator's own); odd weights are warnings.
 */
export function parseBackendsFile(raw: unknown): Checked<BackendSet> {
  const errors: Problem[] = [];
  const warnings: Problem[] = [];
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    return {
      ok: false,
      errors: [
        {
          code: "invalid_type",
          path: "(file)",
          message: `must be an object of "<app>-<service>": { "<ip>": { "weight": N } }`,
        },
      ],
      warnings,
    };
  // Read in place with the rules of a registry key (readEndpoint), without making one per endpoint: the file of a
  // large registry holds 100,000 of them and is read at every start. A Map, as in backendSetFromKeys.
  const byName = new Map<string, Record<string, Endpoint>>();
  const rejected: Problem[] = [];
  for (const [name, eps] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof eps !== "object" || eps === null || Array.isArray(eps)) {
      errors.push({
        code: "invalid_type",
        path: `[${JSON.stringify(name)}]`,
        message: `must be an object of "<ip>": { "weight": N }, got ${describeValue(eps)}`,
      });
      continue;
    }
    for (const [ip, ep] of Object.entries(eps as Record<string, unknown>)) {
      const r = fileEndpoint(name, ip, ep);
      const path = () => `[${JSON.stringify(name)}][${JSON.stringify(ip)}]`;
      if (r.kind === "rejected") {
        rejected.push({ code: "registry_key_rejected", path: path(), message: r.reason });
        continue;
      }
      if (r.warning) warnings.push({ code: "registry_value", path: path(), message: r.warning });
      let set = byName.get(r.name);
      if (!set) byName.set(r.name, (set = {}));
      set[r.ip] = r.endpoint;
    }
  }
  errors.push(...rejected);
  const set = sortBackendSet(Object.fromEntries(byName));
  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, value: set, warnings };
}
