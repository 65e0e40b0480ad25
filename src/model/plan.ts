import type { Table } from "./table.js";

/** One endpoint as the dynamic balancer receives it. */
export interface PushedEndpoint {
  readonly ip: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
}

/**
 * Every route's endpoint set by upstream name; an empty list means the route answers 503. A Table: a change's sets
 * share every unchanged set's entry with the previous target's.
 */
export type EndpointSets = Table<readonly PushedEndpoint[]>;

/**
 * Dynamic routes mode: every plain-port server's routes by `<port> <domain>`, each value the pushed line format (see
 * render/routes-dynamic.ts), so comparing two tables is comparing strings.
 */
export type RouteTable = Table<string>;

/**
 * Dynamic routes mode with pushed certificates: each TLS site's certificate id by `<tls port> <domain>` (the id
 * hashes the certificate and key, so two tables compare by id without touching key material).
 */
export type CertIds = ReadonlyMap<string, { readonly id: string }>;

/** What nginx runs (or should run): the rendered config's generation and, in dynamic mode, the pushed sets. */
export interface AppliedState {
  readonly mode: "reload" | "dynamic";
  /** Generation hash of the rendered nginx.conf (in dynamic mode it holds no endpoint). */
  readonly generation: string;
  /** The endpoint sets nginx holds in its shared dict; null in reload mode (they are in the config). */
  readonly endpoints: EndpointSets | null;
  /** Dynamic routes mode: the routing table nginx holds in its shared dict; null or absent when routes are rendered. */
  readonly routes?: RouteTable | null;
  /** Pushed certificates (with dynamic routes): the certificates nginx holds; null or absent when not pushed. */
  readonly certs?: CertIds | null;
  /**
   * How `routes` was built: equal to `base` except at `keys` (a routing change compiled against the last target).
   * When nginx holds `base`, only those keys can differ, so `plan` compares them alone.
   */
  readonly routesDelta?: Delta<RouteTable> | null;
  /** As `routesDelta`, for `endpoints` (the upstreams whose sets may differ from `base`'s). */
  readonly endpointsDelta?: Delta<EndpointSets> | null;
}

/** A table described against an earlier one: the keys where the two may differ (added, removed or changed). */
export interface Delta<T> {
  readonly base: T;
  readonly keys: readonly string[];
}

/**
 * How to get from `running` to `desired`, decided once per apply. `reload` also covers "nothing runs yet"; in
 * dynamic mode a reload is followed by a whole push, since the shared dict may hold sets of routes that changed.
 * `push` names the upstreams whose sets differ from what nginx holds, or `all` when nginx's sets are unknown.
 */
export type Plan =
  | { readonly action: "none" }
  | { readonly action: "reload" }
  | {
      readonly action: "push";
      readonly upstreams: readonly string[] | "all";
      /** Dynamic routes mode: the servers (`<port> <domain>`) whose routes differ, or `all` when nginx's are unknown. */
      readonly routes?: readonly string[] | "all";
      /** Pushed certificates: true when nginx's differ from the wanted ones or are unknown (the push sends the rest). */
      readonly certs?: boolean;
    };

function sameEndpoint(a: PushedEndpoint, b: PushedEndpoint): boolean {
  return a.ip === b.ip && a.port === b.port && a.weight === b.weight && a.backup === b.backup;
}

function sameList(x: readonly PushedEndpoint[] | undefined, y: readonly PushedEndpoint[] | undefined): boolean {
  if (x === y) return x !== undefined;
  if (x === undefined || y === undefined || x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    const ex = x[i];
    const ey = y[i];
    if (ex === undefined || ey === undefined || !sameEndpoint(ex, ey)) return false;
  }
  return true;
}

/**
 * The one decision of an apply: the cheapest action that makes nginx serve `desired` (pure). `force` reloads even an
 * unchanged config (SIGHUP).
 */
export function plan(running: AppliedState | null, desired: AppliedState, force = false): Plan {
  if (force || running === null || running.mode !== desired.mode || running.generation !== desired.generation)
    return { action: "reload" };
  if (desired.mode === "reload" || desired.endpoints === null) return { action: "none" };
  // Unknown sets (nginx restarted, or the last push failed) must be pushed again, whole.
  // With dynamic routes, upstreams come and go without a reload: a partial push adds and removes them too.
  const upstreams =
    running.endpoints === null
      ? "all"
      : ((desired.routes
          ? namedChanges(running.endpoints, desired.endpoints, desired.endpointsDelta)
          : changedUpstreams(running.endpoints, desired.endpoints)) ?? "all");
  const none = (l: readonly string[] | "all") => l !== "all" && l.length === 0;
  if (!desired.routes) return none(upstreams) ? { action: "none" } : { action: "push", upstreams };
  // Dynamic routes: only ports (in the generation) reload; every other routing change is a push of the servers it
  // touches, beside the sets.
  const routes = running.routes ? changedServers(running.routes, desired.routes, desired.routesDelta) : "all";
  // A certificate rotation, a new TLS site or a removed one is a push too (the TLS ports are in the generation).
  const certs = desired.certs ? !running.certs || !sameCerts(running.certs, desired.certs) : false;
  if (none(upstreams) && none(routes) && !certs) return { action: "none" };
  return { action: "push", upstreams, routes, ...(desired.certs ? { certs } : {}) };
}

function sameCerts(running: CertIds, desired: CertIds): boolean {
  if (running === desired) return true;
  if (running.size !== desired.size) return false;
  for (const [key, c] of desired) if (running.get(key)?.id !== c.id) return false;
  return true;
}

/**
 * The upstreams added, removed or changed between two set lists (a removed one: absent from `desired`). When
 * `desired` was built from the very sets nginx holds (`delta.base`), only the delta's keys are compared: the same
 * names, in another order (order carries no meaning in a push).
 */
function namedChanges(running: EndpointSets, desired: EndpointSets, delta?: Delta<EndpointSets> | null): string[] {
  if (delta && delta.base === running)
    return [...new Set(delta.keys)].filter((name) => !sameSet(running.get(name), desired.get(name)));
  const changed: string[] = [];
  for (const [name, list] of desired) if (!sameList(running.get(name), list)) changed.push(name);
  for (const name of running.keys()) if (!desired.has(name)) changed.push(name);
  return changed;
}

/** Two sets of one upstream name are the same: both absent, or equal lists. */
const sameSet = (a: readonly PushedEndpoint[] | undefined, b: readonly PushedEndpoint[] | undefined) =>
  (a === undefined && b === undefined) || sameList(a, b);

/** The servers added, removed or changed between two routing tables (with `delta`: as namedChanges). */
function changedServers(running: RouteTable, desired: RouteTable, delta?: Delta<RouteTable> | null): string[] {
  if (delta && delta.base === running)
    return [...new Set(delta.keys)].filter((key) => running.get(key) !== desired.get(key));
  const changed: string[] = [];
  for (const [key, value] of desired) if (running.get(key) !== value) changed.push(key);
  for (const key of running.keys()) if (!desired.has(key)) changed.push(key);
  return changed;
}

/**
 * The upstreams whose sets differ between `running` and `desired` (upstream order is irrelevant; endpoints compare in
 * order, both sides come from the same sorted join), or null when the two do not name the same upstreams.
 */
function changedUpstreams(running: EndpointSets, desired: EndpointSets): string[] | null {
  if (desired.size !== running.size) return null;
  const changed: string[] = [];
  for (const [name, b] of desired) {
    const a = running.get(name);
    if (a === undefined) return null;
    if (!sameList(a, b)) changed.push(name);
  }
  return changed;
}
