import type { TopologyRoute } from "../reconciler/topology.js";

/**
 * The part of a route a routing file decides. Endpoints are left out: they come from the registry, which applying a
 * routing file does not change.
 */
export type RouteShape = Pick<TopologyRoute, "prefix" | "upstream" | "backend" | "backendPath" | "backup">;

/** The part of a server a routing file decides (certificates are not in the status view, so not compared). */
export interface ServerShape {
  readonly domain: string;
  readonly port: number;
  readonly tlsPort?: number;
  readonly routes: readonly RouteShape[];
}

/** One difference between the running topology and a routing file's. */
export interface TopologyChange {
  readonly op: "added" | "removed" | "changed";
  readonly kind: "server" | "route";
  /** `domain:port` for a server, `domain:port/prefix` for a route (the label the status view shows). */
  readonly name: string;
  /** What the server or route is (added, removed) or what differs, `before -> after` (changed). */
  readonly detail: string;
}

const serverKey = (s: ServerShape) => `${s.domain}:${s.port}`;
const tls = (s: ServerShape) => (s.tlsPort === undefined ? "" : `tls port ${s.tlsPort}`);

/** A route as one line: where it goes and the upstream nginx names for it. */
function describeRoute(r: RouteShape): string {
  return [
    `-> ${r.backend}`,
    ...(r.backendPath === "/" ? [] : [`path ${r.backendPath}`]),
    ...(r.backup ? [`backup ${r.backup}`] : []),
    `(upstream ${r.upstream})`,
  ].join(" ");
}

/** `field before -> after` for each field that differs; empty when none does. */
function fieldChanges(fields: readonly (readonly [string, string, string])[]): string {
  return fields
    .filter(([, before, after]) => before !== after)
    .map(([field, before, after]) => `${field} ${before} -> ${after}`)
    .join("; ");
}

function routeChange(before: RouteShape, after: RouteShape): string {
  return fieldChanges([
    ["backend", before.backend, after.backend],
    ["backend path", before.backendPath, after.backendPath],
    ["backup", before.backup ?? "none", after.backup ?? "none"],
    ["upstream", before.upstream, after.upstream],
  ]);
}

/**
 * What applying a routing file would change (pure): servers (by domain and port) and their routes (by prefix) added,
 * removed or changed, in the file's order, removals after. A removed or added server lists its routes too, since
 * each is an upstream nginx gains or loses.
 */
export function diffTopology(running: readonly ServerShape[], file: readonly ServerShape[]): readonly TopologyChange[] {
  const out: TopologyChange[] = [];
  const server = (op: TopologyChange["op"], s: ServerShape, detail: string) =>
    out.push({ op, kind: "server", name: serverKey(s), detail });
  const route = (op: TopologyChange["op"], s: ServerShape, r: RouteShape, detail = describeRoute(r)) =>
    out.push({ op, kind: "route", name: `${serverKey(s)}${r.prefix}`, detail });

  const before = new Map(running.map((s) => [serverKey(s), s]));
  const after = new Set(file.map(serverKey));
  for (const s of file) {
    const old = before.get(serverKey(s));
    if (!old) {
      server("added", s, tls(s));
      for (const r of s.routes) route("added", s, r);
      continue;
    }
    const tlsChange = fieldChanges([["tls port", String(old.tlsPort ?? "none"), String(s.tlsPort ?? "none")]]);
    if (tlsChange) server("changed", s, tlsChange);
    const oldRoutes = new Map(old.routes.map((r) => [r.prefix, r]));
    const newPrefixes = new Set(s.routes.map((r) => r.prefix));
    for (const r of s.routes) {
      const was = oldRoutes.get(r.prefix);
      if (!was) route("added", s, r);
      else {
        const change = routeChange(was, r);
        if (change) route("changed", s, r, change);
      }
    }
    for (const r of old.routes) if (!newPrefixes.has(r.prefix)) route("removed", s, r);
  }
  for (const s of running) {
    if (after.has(serverKey(s))) continue;
    server("removed", s, tls(s));
    for (const r of s.routes) route("removed", s, r);
  }
  return out;
}

const SIGN = { added: "+", removed: "-", changed: "~" } as const;

/** One change as a line: `+ route a.test:80/api -> api-api:8000 (upstream nlb_...)`, `~ route ...: backend x -> y`. */
export function formatChange(c: TopologyChange): string {
  const sep = c.op === "changed" ? ": " : " ";
  return `${SIGN[c.op]} ${c.kind} ${c.name}${c.detail ? `${sep}${c.detail}` : ""}`;
}

/** A count per kind and operation: `1 server added, 2 routes changed`; `no change` for none. */
export function summarize(changes: readonly TopologyChange[]): string {
  const parts: string[] = [];
  for (const kind of ["server", "route"] as const)
    for (const op of ["added", "removed", "changed"] as const) {
      const n = changes.filter((c) => c.kind === kind && c.op === op).length;
      if (n > 0) parts.push(`${n} ${kind}${n === 1 ? "" : "s"} ${op}`);
    }
  return parts.length ? parts.join(", ") : "no change";
}
