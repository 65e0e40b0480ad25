/** One open event stream: who holds it. */
export interface EventClient {
  /** The client's address as the server sees it (IPv4-mapped IPv6 written as IPv4). */
  readonly address: string;
  /** It presented the admin token (the configured one, or the local operator token). */
  readonly authenticated: boolean;
}

/** How many event streams the admin server keeps open, and how they are shared. */
export interface EventSlotLimits {
  readonly total: number;
  /** Slots only clients with the token may take: the operator always gets in. */
  readonly reservedForAuthenticated: number;
  /** Streams one address may hold without the token. */
  readonly perAddress: number;
}

export const EVENT_SLOT_LIMITS: EventSlotLimits = { total: 32, reservedForAuthenticated: 4, perAddress: 8 };

/** The address to count a client under: `::ffff:127.0.0.1` and `127.0.0.1` are one client. */
export function clientAddress(remote: string | undefined): string {
  const a = remote ?? "";
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}

/** Whether a new stream may open beside `open`, and if not, a message that says what to do. */
export function admitEventClient(
  open: Iterable<EventClient>,
  candidate: EventClient,
  limits: EventSlotLimits = EVENT_SLOT_LIMITS,
): { ok: true } | { ok: false; why: string } {
  let total = 0;
  let anonymous = 0;
  let sameAddress = 0;
  for (const c of open) {
    total++;
    if (c.authenticated) continue;
    anonymous++;
    if (c.address === candidate.address) sameAddress++;
  }
  const poll = "poll /api/status meanwhile";
  if (total >= limits.total)
    return { ok: false, why: `all ${limits.total} event streams are open; close a dashboard tab or ${poll}` };
  if (candidate.authenticated) return { ok: true };
  if (sameAddress >= limits.perAddress)
    return {
      ok: false,
      why: `${candidate.address} already holds ${limits.perAddress} event streams (the most one client address may hold without the admin token); close one or ${poll}`,
    };
  const open4anonymous = limits.total - limits.reservedForAuthenticated;
  if (anonymous >= open4anonymous)
    return {
      ok: false,
      why: `all ${open4anonymous} event streams for clients without the admin token are open (${limits.reservedForAuthenticated} more are kept for clients that send it as Authorization: Bearer); ${poll}`,
    };
  return { ok: true };
}
