import type { EndpointSets } from "../model/plan.js";
import { Table } from "../model/table.js";
import { backendName } from "../model/services.js";
import type { OutlierSettings, RenderOptions, RenderedFile } from "./options.js";
import type { BoundRoute } from "./bind-routes.js";
import { certsControlLines, certsHttpLines, certsInitLua } from "./tls-dynamic.js";
import { RenderBug, tok } from "./tokens.js";

/**
 * Dynamic endpoints mode: nginx.conf holds no endpoint. Each route's upstream hands the choice to our Lua balancer
 * (src/nginx/lua/nginx_lb_balancer.lua), which reads the sets the controller pushes to the control server
 * (nginx_lb_push.lua) or that a new nginx master loads from the state dir (nginx_lb_initial.lua).
 */

export const ENDPOINTS_PATH = "/nginx-lb/endpoints";
/** The control server's read of the outlier ejections (nginx_lb_outlier.lua), token required. */
export const EJECTIONS_PATH = "/nginx-lb/ejections";
/**
 * The Lua modules nginx.conf names, one job each: balancing, the push endpoint, the start-up sets, their layout,
 * outlier ejection, the control server's token check, the traffic counters, reading a start-up file, the per-worker
 * sweep of cached entries a push removed.
 */
export const LUA_MODULES = [
  "nginx_lb_balancer",
  "nginx_lb_push",
  "nginx_lb_control",
  "nginx_lb_initial",
  "nginx_lb_sets",
  "nginx_lb_secret",
  "nginx_lb_stats",
  "nginx_lb_outlier",
  "nginx_lb_startup_file",
  "nginx_lb_sweep",
] as const;
export type LuaModules = Readonly<Record<(typeof LUA_MODULES)[number], string>>;
const BALANCER = "nginx_lb_balancer";
const PUSH = "nginx_lb_push";
const INITIAL = "nginx_lb_initial";
const STATS = "nginx_lb_stats";
/** Where the controller reads (and so drains) the traffic counters, on the control server, with the push token. */
export const STATS_PATH = "/nginx-lb/stats";
/**
 * The counters of routes and endpoints that saw traffic: ~30 keys of ~128 bytes for a route whose latencies spread
 * over every bucket, 2 per endpoint; 32 MiB holds ~250,000 keys (10,000 busy routes). Full, nginx drops the least
 * recently used keys, which hold at most a second of counts.
 */
const STATS_DICT = "nginx_lb_stats 32m";
const OUTLIER = "nginx_lb_outlier";

/** The ejection defaults (see OutlierSettings): as Envoy's consecutive-5xx detection, with a 50 % ejection cap. */
export const DEFAULT_OUTLIER: OutlierSettings = { errors: 5, baseMs: 30_000, maxMs: 300_000, maxPercent: 50 };
/**
 * The last pushed sets, in the push format, inside the state dir: a new nginx master loads them at start so a restart
 * after a crash serves the last known endpoints instead of 503 until the controller pushes.
 */
export const INITIAL_SETS_FILE = "endpoints.sets";
/** Where Debian's libnginx-mod-* packages put nginx's dynamic modules (ndk, lua). */
export const DEFAULT_MODULES_DIR = "/usr/lib/nginx/modules";
/** Room for ~10,000 upstreams of a few endpoints each, several times over; fixed, since a resize loses the dict. */
const SHARED_DICT = "nginx_lb 32m";
/** A push carries every set at once; the body must fit in memory (client_body_buffer_size) to be read by Lua. */
export const PUSH_MAX_BODY_MB = 16;

/** True when the options ask for dynamic endpoints. */
export function isDynamic(options: RenderOptions): boolean {
  return options.endpointsMode === "dynamic";
}

/** The Lua modules, checked: dynamic mode cannot work without every module nginx.conf names, a port and a token. */
function luaModules(options: RenderOptions): LuaModules {
  const modules = options.luaSource;
  const missing = LUA_MODULES.filter((m) => !modules?.[m]);
  if (modules === undefined || missing.length > 0)
    throw new RenderBug(`dynamic endpoints mode needs the Lua modules ${missing.join(", ")} (options.luaSource)`);
  if (options.controlPort === undefined)
    throw new RenderBug("dynamic endpoints mode needs a control port: pushes arrive there");
  // Any local user can reach the loopback control port: a push endpoint without a secret would let them redirect
  // every route. The controller always has one (state.json); tests pass their own.
  if (!options.pushToken) throw new RenderBug("dynamic endpoints mode needs a push token (options.pushToken)");
  return modules;
}

/** Text placed inside a double-quoted Lua string: built only from tokens that already passed their grammar. */
function luaText(v: string): string {
  if (!/^[A-Za-z0-9._~!*+,:@=/ ()-]*$/.test(v)) throw new RenderBug(`refusing to emit Lua text ${JSON.stringify(v)}`);
  return v;
}

/** Main-context lines: the modules the balancer needs (they must precede `events`). */
export function dynamicMainLines(options: RenderOptions): string[] {
  if (!isDynamic(options)) return [];
  luaModules(options);
  const dir = tok.file((options.nginxModulesDir ?? DEFAULT_MODULES_DIR).replace(/\/+$/, ""));
  return [`load_module ${dir}/ndk_http_module.so;`, `load_module ${dir}/ngx_http_lua_module.so;`];
}

/**
 * http-context lines: where our Lua lives, the shared dict that outlives reloads, the start-up sets (loaded only into
 * an empty dict, i.e. by a new master) and per-worker start-up.
 */
export function dynamicHttpLines(options: RenderOptions, dir: string, extraInit = ""): string[] {
  if (!isDynamic(options)) return [];
  luaModules(options);
  const initial = luaText(tok.file(`${dir}/${INITIAL_SETS_FILE}`));
  const certs = certsInitLua(options, dir);
  const o = options.outlier ?? DEFAULT_OUTLIER;
  if (o.maxPercent > 100 || o.maxMs < o.baseMs)
    throw new RenderBug(`outlier settings out of range: ${JSON.stringify(o)}`);
  const outlier = [o.errors, o.baseMs, o.maxMs, o.maxPercent].map((n) => tok.int(n)).join(", ");
  const more = extraInit ? `; ${extraInit}` : "";
  return [
    `    # Dynamic endpoints: sets are pushed to the control server and kept in this dict across reloads.`,
    `    lua_package_path "${tok.file(`${dir}/lua`)}/?.lua;;";`,
    `    lua_shared_dict ${SHARED_DICT};`,
    ...certsHttpLines(options),
    // Every module is loaded here, by the master: the files are 0600 to the workers' user.
    `    init_by_lua_block { require("${OUTLIER}").configure(${outlier}); require("${BALANCER}"); require("${PUSH}"); ` +
      `${options.trafficCounters ? `require("${STATS}"); ` : ""}require("${INITIAL}").load("${initial}")` +
      `${certs ? `; ${certs}` : ""}${more} }`,
    `    init_worker_by_lua_block { require("${BALANCER}").init_worker() }`,
    ...logPhase(options, o),
    ``,
  ];
}

/**
 * nginx takes one log_by_lua per context: it judges every proxied request's attempts for outlier ejection (a request
 * the balancer did not route returns at once) and, with the traffic counters, counts it. Both read what the balancer
 * left in the request's ngx.ctx, looked up once here. Entering Lua in the log phase costs every request about as much
 * as the counting itself, so with neither the block is left out.
 */
function logPhase(options: RenderOptions, o: OutlierSettings): string[] {
  const calls = [
    ...(o.errors > 0 ? [`require("${OUTLIER}").log(ctx)`] : []),
    ...(options.trafficCounters ? [`require("${STATS}").log(ctx)`] : []),
  ];
  return calls.length > 0 ? [`    log_by_lua_block { local ctx = ngx.ctx; ${calls.join("; ")} }`] : [];
}

/** The files dynamic mode adds beside nginx.conf (the Lua modules; 0600: the master loads them in init_by_lua). */
export function dynamicFiles(options: RenderOptions): RenderedFile[] {
  if (!isDynamic(options)) return [];
  const modules = luaModules(options);
  return LUA_MODULES.map((m) => ({ path: `lua/${m}.lua`, content: modules[m], mode: 0o600 }));
}

/** A route's upstream in dynamic mode: a placeholder peer nginx never contacts, the balancer, then keepalive. */
export function renderDynamicUpstream(plan: BoundRoute, keepalive: number): string {
  const { route, server } = plan;
  const name = tok.upstream(plan.upstream);
  const backup = route.backup
    ? `, backup ${tok.backend(backendName(route.backup))}:${tok.port(route.backup.port)}`
    : "";
  return [
    `    upstream ${name} {`,
    `        # ${tok.domain(server.domain)}:${tok.port(server.port)} ${tok.path(route.prefix)} -> ` +
      `${tok.backend(backendName(route.primary))}:${tok.port(route.primary.port)}${backup} (endpoints pushed)`,
    `        server 0.0.0.1:1;`,
    `        balancer_by_lua_block { require("${BALANCER}").balance("${name}") }`,
    // keepalive wraps the peer selection that precedes it, so it must follow balancer_by_lua_block.
    `        keepalive ${tok.int(keepalive)};`,
    `    }`,
  ].join("\n");
}

/** A dynamic route's location body: the 503 for an empty set is decided per request, since sets change unreloaded. */
export function dynamicLocationBody(plan: BoundRoute, target: string): string[] {
  const name = tok.upstream(plan.upstream);
  const message = luaText(
    `no endpoint for route ${tok.path(plan.route.prefix)} (${tok.backend(backendName(plan.route.primary))})`,
  );
  return [
    `access_by_lua_block { require("${BALANCER}").access("${name}", "${message}\\n") }`,
    `proxy_pass http://${name}${target};`,
  ];
}

/** The push endpoint inside the loopback-only control server, and the traffic counters' read endpoint when on. */
export function dynamicControlLines(options: RenderOptions): string[] {
  if (!isDynamic(options)) return [];
  luaModules(options);
  const mb = `${tok.int(PUSH_MAX_BODY_MB)}m`;
  // Loopback is shared with every local user: every request here must carry this secret (nginx.conf lives in a 0700
  // dir), compared by the Lua in constant time.
  const token = tok.secret(options.pushToken ?? "");
  return [
    `        location = ${ENDPOINTS_PATH} {`,
    `            client_max_body_size ${mb};`,
    `            client_body_buffer_size ${mb};`,
    `            content_by_lua_block { require("${PUSH}").serve("${token}") }`,
    `        }`,
    `        location = ${EJECTIONS_PATH} {`,
    `            content_by_lua_block { require("${OUTLIER}").serve("${token}") }`,
    `        }`,
    ...certsControlLines(options),
    ...(options.trafficCounters
      ? [
          `        location = ${STATS_PATH} {`,
          `            content_by_lua_block { require("${STATS}").serve("${token}") }`,
          `        }`,
        ]
      : []),
    // The controller's own requests here are neither traffic nor upstream attempts.
    `        log_by_lua_block { return }`,
  ];
}

/**
 * http-context lines of the traffic counters (dynamic mode): their dict (the log-phase call that counts every request
 * is dynamicHttpLines' one `log_by_lua_block`, which nginx allows once per context). The dict is cleared only by a new master; a reload keeps it (and what the controller has not read yet).
 */
export function statsHttpLines(options: RenderOptions): string[] {
  if (!options.trafficCounters) return [];
  if (!isDynamic(options))
    throw new RenderBug("traffic counters are counted by the Lua module: they need dynamic endpoints mode");
  luaModules(options);
  return [
    `    # Per-route and per-endpoint traffic, counted in the log phase and drained by the controller once a second.`,
    `    lua_shared_dict ${STATS_DICT};`,
  ];
}

/** Every route's endpoint set by upstream name, from the same bound routes reload mode renders `server` lines from. */
export function endpointSets(routes: readonly BoundRoute[]): EndpointSets {
  // Members are plain readonly data already: shared, not copied (10,000 routes per endpoint change).
  return Table.from(routes.map((r) => [r.upstream, r.members] as const));
}
