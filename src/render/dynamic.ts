import type { EndpointSets } from "../model/plan.js";
import { backendName } from "../model/services.js";
import type { RenderOptions, RenderedFile } from "./options.js";
import type { BoundRoute } from "./bind-routes.js";
import { RenderBug, tok } from "./tokens.js";

/**
 * Dynamic endpoints mode: nginx.conf holds no endpoint. Each route's upstream hands the choice to our Lua balancer
 * (src/nginx/lua/nginx_lb_balancer.lua), which reads the sets the controller pushes to the control server.
 */

export const ENDPOINTS_PATH = "/nginx-lb/endpoints";
export const LUA_MODULE = "nginx_lb_balancer";
const LUA_FILE = `lua/${LUA_MODULE}.lua`;
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

function luaSource(options: RenderOptions): string {
  if (options.luaSource === undefined || options.luaSource.length === 0)
    throw new RenderBug("dynamic endpoints mode needs the balancer's Lua source (options.luaSource)");
  if (options.controlPort === undefined)
    throw new RenderBug("dynamic endpoints mode needs a control port: pushes arrive there");
  return options.luaSource;
}

/** Text placed inside a double-quoted Lua string: built only from tokens that already passed their grammar. */
function luaText(v: string): string {
  if (!/^[A-Za-z0-9._~!*+,:@=/ ()-]*$/.test(v)) throw new RenderBug(`refusing to emit Lua text ${JSON.stringify(v)}`);
  return v;
}

/** Main-context lines: the modules the balancer needs (they must precede `events`). */
export function dynamicMainLines(options: RenderOptions): string[] {
  if (!isDynamic(options)) return [];
  luaSource(options);
  const dir = tok.file((options.nginxModulesDir ?? DEFAULT_MODULES_DIR).replace(/\/+$/, ""));
  return [`load_module ${dir}/ndk_http_module.so;`, `load_module ${dir}/ngx_http_lua_module.so;`];
}

/** http-context lines: where our Lua lives, the shared dict that outlives reloads, and per-worker start-up. */
export function dynamicHttpLines(options: RenderOptions, dir: string): string[] {
  if (!isDynamic(options)) return [];
  luaSource(options);
  return [
    `    # Dynamic endpoints: sets are pushed to the control server and kept in this dict across reloads.`,
    `    lua_package_path "${tok.file(`${dir}/lua`)}/?.lua;;";`,
    `    lua_shared_dict ${SHARED_DICT};`,
    `    init_by_lua_block { require("${LUA_MODULE}") }`,
    `    init_worker_by_lua_block { require("${LUA_MODULE}").init_worker() }`,
    ``,
  ];
}

/** The files dynamic mode adds beside nginx.conf (the balancer itself). */
export function dynamicFiles(options: RenderOptions): RenderedFile[] {
  if (!isDynamic(options)) return [];
  return [{ path: LUA_FILE, content: luaSource(options), mode: 0o644 }];
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
    `        balancer_by_lua_block { require("${LUA_MODULE}").balance("${name}") }`,
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
    `access_by_lua_block { require("${LUA_MODULE}").access("${name}", "${message}\\n") }`,
    `proxy_pass http://${name}${target};`,
  ];
}

/** The push endpoint inside the loopback-only control server. */
export function dynamicControlLines(options: RenderOptions): string[] {
  if (!isDynamic(options)) return [];
  const mb = `${tok.int(PUSH_MAX_BODY_MB)}m`;
  return [
    `        location = ${ENDPOINTS_PATH} {`,
    // Loopback is shared with every local user: a push must carry this secret (nginx.conf lives in a 0700 dir).
    ...(options.pushToken ? [`            set $nlb_push_token ${tok.secret(options.pushToken)};`] : []),
    `            client_max_body_size ${mb};`,
    `            client_body_buffer_size ${mb};`,
    `            content_by_lua_block { require("${LUA_MODULE}").endpoints() }`,
    `        }`,
  ];
}

/** Every route's endpoint set by upstream name, from the same bound routes reload mode renders `server` lines from. */
export function endpointSets(routes: readonly BoundRoute[]): EndpointSets {
  const out: Record<string, BoundRoute["members"]> = {};
  // Members are plain readonly data already: shared, not copied (10,000 routes per endpoint change).
  for (const r of routes) out[r.upstream] = r.members;
  return out;
}
