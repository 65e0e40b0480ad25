import type { RouteTable } from "../model/plan.js";
import { Table } from "../model/table.js";
import { backendName } from "../model/services.js";
import type { BoundRoute } from "./bind-routes.js";
import type { RenderOptions, RenderedFile } from "./options.js";
import { pushesCerts, renderTlsPortServer } from "./tls-dynamic.js";
import { RenderBug, tok } from "./tokens.js";

/**
 * Dynamic routes mode: nginx.conf holds one catch-all `server` per plain port and nothing per site. Each request is
 * routed by our Lua (src/nginx/lua/nginx_lb_router.lua) from the routing table the controller pushes to the control
 * server (nginx_lb_routes_push.lua) or that a new master loads from the state dir (nginx_lb_routes_initial.lua), and
 * proxied to one shared upstream whose balancer takes the endpoint set of the route chosen. With pushed certificates
 * (certsMode "pushed", what `nginx-lb run` uses here) each TLS port is one server too, its certificates served by SNI
 * from shared memory (tls-dynamic.ts), so only the set of ports (and each port's plain/TLS kind) shapes nginx.conf.
 * With certificate files, TLS sites are still rendered per site (their TLS port only).
 */

export const ROUTES_PATH = "/nginx-lb/routes";
/** The Lua modules this mode adds to the endpoint modules (it needs dynamic endpoints: the sets are the balancer's). */
export const ROUTES_LUA_MODULES = [
  "nginx_lb_router",
  "nginx_lb_routes",
  "nginx_lb_routes_push",
  "nginx_lb_routes_initial",
] as const;
/** The last pushed table, in the push format, in the state dir: a new master serves it at once. */
export const INITIAL_ROUTES_FILE = "routes.table";
/** The one upstream every dynamically routed request goes through. */
export const SHARED_UPSTREAM = "nlb_routes";
/** Idle backend connections per worker in the shared upstream (one pool for every route, keyed by address). */
const SHARED_KEEPALIVE = 1024;
/** A whole table of 10,000 sites is about 1 MB; the body must fit in memory to be read by Lua. */
export const ROUTES_MAX_BODY_MB = 16;
const ROUTER = "nginx_lb_router";

/** True when the options ask for routes pushed to nginx rather than rendered. */
export function isRoutesDynamic(options: RenderOptions): boolean {
  return options.routesMode === "dynamic";
}

function checked(options: RenderOptions): void {
  if (options.endpointsMode !== "dynamic")
    throw new RenderBug("dynamic routes mode needs dynamic endpoints mode (the balancer holds the sets)");
  const missing = ROUTES_LUA_MODULES.filter((m) => !options.luaSource?.[m]);
  if (missing.length > 0)
    throw new RenderBug(`dynamic routes mode needs the Lua modules ${missing.join(", ")} (options.luaSource)`);
}

/** What init_by_lua adds: the router's modules, loaded in the master, and the start-up table. */
export function routesInit(options: RenderOptions, dir: string): string {
  if (!isRoutesDynamic(options)) return "";
  checked(options);
  const file = tok.file(`${dir}/${INITIAL_ROUTES_FILE}`);
  return `require("${ROUTER}"); require("nginx_lb_routes_push"); require("nginx_lb_routes_initial").load("${file}")`;
}

/** The Lua files this mode adds beside nginx.conf (0600: the master loads them in init_by_lua). */
export function routesFiles(options: RenderOptions): RenderedFile[] {
  if (!isRoutesDynamic(options)) return [];
  checked(options);
  return ROUTES_LUA_MODULES.map((m) => ({ path: `lua/${m}.lua`, content: options.luaSource?.[m] ?? "", mode: 0o600 }));
}

/** The shared upstream: a placeholder peer nginx never contacts, the router's balancer, then keepalive. */
export function renderSharedUpstream(options: RenderOptions): string {
  return [
    `    upstream ${SHARED_UPSTREAM} {`,
    `        # Every dynamically routed request: the router chose the route, the balancer picks its endpoint.`,
    `        server 0.0.0.1:1;`,
    `        balancer_by_lua_block { require("${ROUTER}").balance() }`,
    `        keepalive ${tok.int(options.upstreamKeepalive ?? SHARED_KEEPALIVE)};`,
    `    }`,
  ].join("\n");
}

/**
 * The router's catch-all location: every Host and path goes to the router, which answers 404/503 itself or sets the
 * backend URI ($nlb_uri: proxy_pass with a variable sends it as it is; left empty, proxy_pass sends the client's URI
 * as it does without a URI part) and, when the access log names it, the route label. A TLS port's one server
 * (certificates by SNI) takes the same lines. The router is told its server's port (the table keys servers by it)
 * rather than reading $server_port per request.
 */
export function routerLocationLines(port: number, options: RenderOptions): string[] {
  // The access log (or a traffic file) writes $nlb_route for every request; the counters take a routed request's
  // route from its endpoint set, so without a log the router sets it only for a route's own 503.
  const tag = Boolean(options.accessLog) || options.trafficLogFile !== undefined;
  return [
    `        location / {`,
    `            set $nlb_route "";`,
    `            set $nlb_uri "";`,
    `            access_by_lua_block { require("${ROUTER}").access(${tok.port(port)}${tag ? ", true" : ""}) }`,
    `            proxy_pass http://${SHARED_UPSTREAM}$nlb_uri;`,
    `        }`,
  ];
}

/** A plain port's one server: the router's location for every Host. */
export function renderPortServer(port: number, options: RenderOptions): string {
  return [
    `    server {`,
    `        listen ${tok.listen(options.listenHost, port)} default_server;`,
    `        server_name _;`,
    ...routerLocationLines(port, options),
    `    }`,
  ].join("\n");
}

/** True when TLS ports are one router server each (routes and certificates pushed), nothing rendered per site. */
export function isTlsRouted(options: RenderOptions): boolean {
  return isRoutesDynamic(options) && pushesCerts(options);
}

/** A TLS port's one server: certificates by SNI from the pushed ones, HTTP/2, the router's location for every Host. */
export function renderTlsRouterServer(port: number, options: RenderOptions): string {
  return renderTlsPortServer(port, options, routerLocationLines(port, options));
}

/** The routes push endpoint inside the loopback-only control server (token-protected as the endpoints push). */
export function routesControlLines(options: RenderOptions): string[] {
  if (!isRoutesDynamic(options)) return [];
  checked(options);
  const mb = `${tok.int(ROUTES_MAX_BODY_MB)}m`;
  const token = tok.secret(options.pushToken ?? "");
  return [
    `        location = ${ROUTES_PATH} {`,
    `            client_max_body_size ${mb};`,
    `            client_body_buffer_size ${mb};`,
    `            content_by_lua_block { require("nginx_lb_routes_push").serve("${token}") }`,
    `        }`,
  ];
}

/** The key of a server in the table: its plain port and its domain in lower case (Host matching ignores case). */
export function serverKey(port: number, domain: string): string {
  return `${tok.port(port)} ${tok.domain(domain).toLowerCase()}`;
}

/**
 * The routing table pushed to nginx, from the same bound routes reload mode renders locations from: per plain-port
 * server, its routes as `<prefix> <upstream> <backend_path> <backend>;` (the grammar nginx_lb_routes.lua checks).
 * Every server is in it; servers without routes have an empty value.
 */
export function routeTable(servers: readonly BoundRoute["server"][], routes: readonly BoundRoute[]): RouteTable {
  return Table.from(serverEntries(servers, routes));
}

/**
 * The table entries of `servers`, whose routes are `routes`: each server's plain-port key, and the same value under
 * its TLS port for a TLS port served by one server (certificates by SNI), since the router keys by the port the
 * request came in on. A port is plain or TLS, never both, so the keys never collide.
 */
function serverEntries(servers: readonly BoundRoute["server"][], routes: readonly BoundRoute[]): [string, string][] {
  const value = new Map<BoundRoute["server"], string>(servers.map((s) => [s, ""]));
  for (const r of routes) value.set(r.server, (value.get(r.server) ?? "") + routeEntry(r));
  const out: [string, string][] = [];
  for (const s of servers) {
    const v = value.get(s) ?? "";
    out.push([serverKey(s.port, s.domain), v]);
    if (s.tls) out.push([serverKey(s.tls.port, s.domain), v]);
  }
  return out;
}

/** One route in a server's table value: `<prefix> <upstream> <backend_path> <backend>;`. */
function routeEntry(r: BoundRoute): string {
  return (
    `${tok.path(r.route.prefix)} ${tok.upstream(r.upstream)} ${tok.path(r.route.backendPath)} ` +
    `${tok.backend(backendName(r.route.primary))};`
  );
}

/**
 * `previous` (a routing table) without the servers `gone`, and with the servers `added`, whose routes are `routes`:
 * what `routeTable` of the new server list gives when every other server kept its routes (serverSplice between a
 * head and a tail, or bindServers). The kept servers' entries are shared with `previous` (Table), so none of their
 * keys is built, checked or copied again.
 */
export function spliceRouteTable(
  previous: RouteTable,
  gone: readonly BoundRoute["server"][],
  added: readonly BoundRoute["server"][],
  routes: readonly BoundRoute[],
): RouteTable {
  // Removals first: a key of a removed server that an added one has too is set again after.
  const removals = serverKeys(gone).map((k): [string, undefined] => [k, undefined]);
  return previous.with([...removals, ...serverEntries(added, routes)]);
}

/** The table keys of `servers`: each one's plain-port key, and its TLS-port key when it has TLS. */
export function serverKeys(servers: readonly BoundRoute["server"][]): string[] {
  return servers.flatMap((s) =>
    s.tls ? [serverKey(s.port, s.domain), serverKey(s.tls.port, s.domain)] : [serverKey(s.port, s.domain)],
  );
}
