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
  // Servers already shared (a source that keeps unchanged servers' objects) are matched by identity: first the common
  // head and tail (pointer comparisons, nothing allocated), then, between them, the servers of either side the other
  // holds. Only the rest are compared, with the previous servers between that the next model no longer holds.
  const a = previous.servers;
  const b = next.servers;
  const max = Math.min(a.length, b.length);
  let head = 0;
  while (head < max && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < max - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const was = a.slice(head, a.length - tail);
  const now = b.slice(head, b.length - tail);
  const kept = new Set(was);
  const held = new Set(now);
  const before = new Map<string, Server>();
  for (const s of was) if (!held.has(s)) before.set(serverKey(s), s);
  let shared = 0;
  const between = now.map((s) => {
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
    a.length === b.length &&
    shared === was.length &&
    between.every((s, i) => s === was[i]) &&
    same({ ...previous, servers: [] }, { ...next, servers: [] });
  if (unchanged) return previous;
  return between.every((s, i) => s === now[i])
    ? next
    : { ...next, servers: b.slice(0, head).concat(between, b.slice(b.length - tail)) };
}
