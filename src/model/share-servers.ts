import type { Server, Services } from "./services.js";

/** Deep equality of validated model values: plain objects, arrays and primitives only (what parsing builds). */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x: unknown, i) => same(x, b[i]));
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && same(ra[k], rb[k]));
}

const serverKey = (s: Server) => `${s.port} ${s.domain}`;

/**
 * `next` with every server equal to one of `previous` replaced by that object (pure), and `previous` itself when
 * nothing differs. A source that parses the whole routing model on every change (services.json) builds new objects
 * for unchanged servers; shared, they let later steps keep what they built for a server by reference (see
 * `compile`), so a change to one of 10,000 sites costs a comparison per server rather than a rebuild.
 */
export function shareServers(previous: Services | null, next: Services): Services {
  if (previous === null || previous === next) return next;
  // Servers already shared (a source that keeps unchanged servers' objects) are matched by identity; only the rest
  // are compared, with the previous servers the next model no longer holds.
  const kept = new Set(previous.servers);
  const held = new Set(next.servers);
  const before = new Map<string, Server>();
  for (const s of previous.servers) if (!held.has(s)) before.set(serverKey(s), s);
  let shared = 0;
  const servers = next.servers.map((s) => {
    if (kept.has(s)) {
      shared++;
      return s;
    }
    const old = before.get(serverKey(s));
    if (old === undefined || !same(old, s)) return s;
    shared++;
    return old;
  });
  const unchanged =
    shared === previous.servers.length &&
    servers.length === previous.servers.length &&
    servers.every((s, i) => s === previous.servers[i]) &&
    same({ ...previous, servers: [] }, { ...next, servers: [] });
  return unchanged ? previous : servers.every((s, i) => s === next.servers[i]) ? next : { ...next, servers };
}
