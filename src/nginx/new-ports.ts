import type { EndpointSets, RouteTable } from "../model/plan.js";
import type { CertTable, SiteCert } from "./certs-push.js";

/** What nginx holds before a reload (routes pushed): the table, the certificates (null: none pushed) and the sets. */
export interface HeldBeforeReload {
  readonly routes: RouteTable;
  readonly certs: CertTable | null;
  readonly sets: EndpointSets;
}

/** What to push before the reload: what nginx holds plus what the new ports need, and which keys that adds. */
export interface NewPortsFirst {
  /** The held table plus the new ports' servers. */
  readonly routes: RouteTable;
  /** The table keys (`<port> <domain>`) added: the servers a partial push sends. */
  readonly added: readonly string[];
  /** The held certificates plus the new TLS ports' ones; null when none is new (or none is known to be held). */
  readonly certs: CertTable | null;
  /** The held sets plus the sets of upstreams nginx holds none for yet (a set no route names is never used). */
  readonly sets: EndpointSets;
  /** The upstreams those new sets are for: the upstreams a partial push sends. */
  readonly upstreams: readonly string[];
}

const portOf = (key: string) => key.slice(0, key.indexOf(" "));

/**
 * Routes pushed: a reload that opens a new listening port would accept its first requests before the push that
 * follows it names the port's sites (404 "no site" where reload mode serves at once). The shared dicts survive a
 * reload, and lines for a port no server listens on yet are never looked up, so the new ports' servers (with the sets
 * they name and their certificates) can go first. Routes and certificates of ports already open stay exactly as
 * held, so a reload nginx refuses leaves the routes in force unchanged. Null when no port is new.
 */
export function newPortsFirst(
  held: HeldBeforeReload,
  desired: { readonly routes: RouteTable; readonly certs: CertTable | null; readonly sets: EndpointSets },
): NewPortsFirst | null {
  const open = new Set([...held.routes.keys()].map(portOf));
  const added = [...desired.routes.keys()].filter((k) => !open.has(portOf(k)));
  if (added.length === 0) return null;
  const routes = held.routes.with(added.map((k) => [k, desired.routes.get(k) ?? ""]));
  const newTls: [string, SiteCert][] =
    held.certs === null || desired.certs === null
      ? []
      : [...desired.certs].filter(([k]) => !open.has(portOf(k)) && held.certs?.has(k) !== true);
  const upstreams = [...desired.sets.keys()].filter((u) => !held.sets.has(u));
  const sets = held.sets.with(upstreams.map((u) => [u, desired.sets.get(u) ?? []]));
  return {
    routes,
    added,
    certs: newTls.length > 0 && held.certs !== null ? new Map([...held.certs, ...newTls]) : null,
    sets,
    upstreams,
  };
}
