/**
 * The cross-server checks of a clean services file (assembleServers: no (port, domain) claimed twice, no port used for
 * both protocols), kept from one read to the next, so a read that changed a few servers of 10,000 checks those few
 * against the rest instead of replaying every server's claims.
 *
 * An index holds the claims of the file it was built from (`base`) and the edits of the reads since: the checks added
 * since and still present (`plus`), and the base's checks removed since (`minus`). A file the index describes is clean,
 * and an edit keeps it clean exactly when none of the added checks' claims meets another claim of the new file: a
 * conflict needs two claims, and two claims that were both there before did not conflict. Anything else (a problem in
 * an added server, a conflict, no server at all) is left to assembleServers, which words it; `next` then says null.
 */
import type { ServerCheck } from "../model/services.js";

/** Each port's claims: by domain, the check claiming it; and how many claims use the port for each protocol. */
interface PortClaims {
  readonly domains: ReadonlyMap<string, ServerCheck>;
  readonly plain: number;
  readonly tls: number;
}

export interface ClaimIndex {
  readonly base: ReadonlyMap<number, PortClaims>;
  readonly plus: ReadonlySet<ServerCheck>;
  readonly minus: ReadonlySet<ServerCheck>;
}

/** Edits kept on top of a base before the next edit builds a new base (a full assemble). */
export const MAX_EDITS = 256;

interface Claim {
  readonly port: number;
  readonly tls: boolean;
}

function claimsOf(check: ServerCheck): Claim[] | null {
  const out: Claim[] = [];
  for (const step of check.steps) {
    // A problem of its own (an error or a warning): the file is not clean.
    if (!("claim" in step)) return null;
    out.push({ port: step.claim, tls: step.field === "ssl_port" });
  }
  return out;
}

/** The index of a clean file's checks (the caller knows assembleServers found nothing to say about them). */
export function indexClaims(checks: readonly ServerCheck[]): ClaimIndex | null {
  const base = new Map<number, { domains: Map<string, ServerCheck>; plain: number; tls: number }>();
  for (const check of checks) {
    const claims = claimsOf(check);
    if (claims === null) return null;
    for (const { port, tls } of claims) {
      let p = base.get(port);
      if (p === undefined) base.set(port, (p = { domains: new Map(), plain: 0, tls: 0 }));
      if (p.domains.has(check.server.domain)) return null;
      p.domains.set(check.server.domain, check);
      if (tls) p.tls++;
      else p.plain++;
    }
  }
  return { base, plus: new Set(), minus: new Set() };
}

/**
 * The index of the file `index`'s file becomes when `removed` checks leave it and `added` ones join it, or null when
 * that file may not be clean (then assembleServers decides) or the edits outgrew MAX_EDITS. `total`: the new file's
 * number of servers.
 */
export function nextClaims(
  index: ClaimIndex,
  removed: readonly ServerCheck[],
  added: readonly ServerCheck[],
  total: number,
): ClaimIndex | null {
  if (total === 0) return null;
  const plus = new Set(index.plus);
  const minus = new Set(index.minus);
  for (const r of removed) {
    if (plus.has(r)) plus.delete(r);
    else minus.add(r);
  }
  for (const a of added) plus.add(a);
  if (plus.size + minus.size > MAX_EDITS) return null;
  // The claims of the checks added since the base (these reads' and earlier ones'), by port.
  const extra = new Map<number, Claim[]>();
  const domainsOf = new Map<Claim, string>();
  for (const check of plus) {
    const claims = claimsOf(check);
    if (claims === null) return null;
    for (const c of claims) {
      const list = extra.get(c.port) ?? [];
      list.push(c);
      extra.set(c.port, list);
      domainsOf.set(c, check.server.domain);
    }
  }
  for (const check of added) {
    for (const claim of claimsOf(check) ?? []) {
      const port = claim.port;
      const domain = check.server.domain;
      const p = index.base.get(port);
      const owner = p?.domains.get(domain);
      if (owner !== undefined && !minus.has(owner)) return null;
      // Claims since the base of this (port, domain): this one only.
      const onPort = extra.get(port) ?? [];
      if (onPort.filter((c) => domainsOf.get(c) === domain).length > 1) return null;
      // The other protocol on this port: the base's claims of it that stay, and those since.
      let other = p === undefined ? 0 : claim.tls ? p.plain : p.tls;
      if (other > 0)
        for (const m of minus) for (const c of claimsOf(m) ?? []) if (c.port === port && c.tls !== claim.tls) other--;
      if (other > 0 || onPort.some((c) => c.tls !== claim.tls)) return null;
    }
  }
  return { base: index.base, plus, minus };
}
