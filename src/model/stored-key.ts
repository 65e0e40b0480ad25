import type { Problem } from "./problem.js";
import { serverKey } from "./services-table.js";

/**
 * The admin API never sends a private key: `GET /api/services` shows each server's `ssl_certificate_key` as
 * STORED_KEY, and a write that sends STORED_KEY back keeps the key etcd holds for that server (the same
 * `domain_name:frontend_port`), so what GET answers writes back unchanged. Any other value replaces the key.
 */
export const STORED_KEY = "<the key stored in etcd>";

type Raw = Record<string, unknown>;
const isObject = (v: unknown): v is Raw => typeof v === "object" && v !== null && !Array.isArray(v);

/** The server objects with every private key replaced by STORED_KEY (other fields and their order kept). */
export function hideKeys(servers: readonly Raw[]): Raw[] {
  return servers.map((s) =>
    typeof s["ssl_certificate_key"] === "string" ? { ...s, ssl_certificate_key: STORED_KEY } : s,
  );
}

/**
 * One server object with STORED_KEY replaced by the key of the stored value of its key (`stored`: key -> value as
 * etcd holds it); a problem at `path` when etcd holds none for it. Anything else is returned as it is.
 */
export function restoreKey(
  prefix: string,
  server: unknown,
  stored: ReadonlyMap<string, string>,
  path: string,
): { readonly server: unknown; readonly problem?: Problem } {
  if (!isObject(server) || server["ssl_certificate_key"] !== STORED_KEY) return { server };
  const domain = server["domain_name"];
  const port = server["frontend_port"] ?? 80;
  const key = typeof domain === "string" && Number.isInteger(port) ? serverKey(prefix, domain, port as number) : "";
  let kept: unknown;
  try {
    const value = stored.get(key);
    kept = value === undefined ? undefined : (JSON.parse(value) as Raw)["ssl_certificate_key"];
  } catch {
    kept = undefined;
  }
  if (typeof kept === "string" && kept !== STORED_KEY)
    return {
      server: Object.fromEntries(Object.entries(server).map(([k, v]) => [k, k === "ssl_certificate_key" ? kept : v])),
    };
  return {
    server,
    problem: {
      code: "stored_key_missing",
      path: path === "" ? "ssl_certificate_key" : `${path}.ssl_certificate_key`,
      message: `is ${JSON.stringify(STORED_KEY)} (keep the stored key), but etcd holds no key for ${typeof domain === "string" ? `${domain}:${String(port)}` : "this server"}: send the key's PEM text`,
    },
  };
}

/** A services.json document with every STORED_KEY restored (see restoreKey); problems name `servers[i]`. */
export function restoreKeys(
  prefix: string,
  doc: unknown,
  stored: ReadonlyMap<string, string>,
): { readonly doc: unknown; readonly problems: readonly Problem[] } {
  if (!isObject(doc) || !Array.isArray(doc["servers"])) return { doc, problems: [] };
  const problems: Problem[] = [];
  const servers = (doc["servers"] as unknown[]).map((s, i) => {
    const r = restoreKey(prefix, s, stored, `servers[${i}]`);
    if (r.problem) problems.push(r.problem);
    return r.server;
  });
  return { doc: { ...doc, servers }, problems };
}
