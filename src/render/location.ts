import { normalizePrefix } from "../model/grammar.js";
import { backendName } from "../model/services.js";
import { dynamicLocationBody } from "./dynamic.js";
import type { BoundRoute } from "./bind-routes.js";
import { tok } from "./tokens.js";

/** The path nginx substitutes for the matched prefix: `backend_path` with exactly one trailing slash. */
function withSlash(path: string): string {
  return path.endsWith("/") ? path : `${path}/`;
}

/**
 * What a location does: proxy to the route's upstream, or answer 503 naming the route when it has no endpoint.
 * `target` null means the route maps its prefix to itself: proxy_pass without a URI then sends the client's request
 * URI as received, whereas a URI part makes nginx send its decoded, normalised copy (`%2F` becomes `/`, `//` `/`).
 */
function body(bound: BoundRoute, target: string | null, dynamic: boolean): string[] {
  if (dynamic) return dynamicLocationBody(bound, target ?? "");
  if (bound.members.length > 0) return [`proxy_pass http://${tok.upstream(bound.upstream)}${target ?? ""};`];
  const { route } = bound;
  return [
    `default_type text/plain;`,
    `return 503 "no endpoint for route ${tok.path(route.prefix)} (${tok.backend(backendName(route.primary))})\\n";`,
  ];
}

function block(match: string, lines: string[]): string {
  return [`        location ${match} {`, ...lines.map((l) => `            ${l}`), `        }`].join("\n");
}

/**
 * The locations of one route. A prefix `/p` maps `/p/x` to `<backend_path>/x` and `/p` itself to `<backend_path>`;
 * `/px` is not this route. nginx's prefix locations give "longest prefix wins" for free.
 */
export function renderLocations(bound: BoundRoute, dynamic = false, tagRoute = false): string {
  const prefix = tok.path(bound.route.prefix);
  const backendPath = tok.path(bound.route.backendPath);
  const identity = withSlash(prefix) === withSlash(backendPath);
  // The access record names the route by its upstream name, also when the route answers 503 without proxying.
  const tag = tagRoute ? [`set $nlb_route ${tok.upstream(bound.upstream)};`] : [];
  if (prefix === "/") return block("/", [...tag, ...body(bound, identity ? null : withSlash(backendPath), dynamic)]);
  return [
    block(`${prefix}/`, [...tag, ...body(bound, identity ? null : withSlash(backendPath), dynamic)]),
    block(`= ${prefix}`, [...tag, ...body(bound, identity ? null : normalizePrefix(backendPath), dynamic)]),
  ].join("\n");
}
