import { backendName } from "../model/services.js";
import { dynamicLocationBody } from "./dynamic.js";
import type { RoutePlan } from "./plan-routes.js";
import { tok } from "./tokens.js";

/** The path nginx substitutes for the matched prefix: `backend_path` with exactly one trailing slash. */
function withSlash(path: string): string {
  return path.endsWith("/") ? path : `${path}/`;
}
function withoutSlash(path: string): string {
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

/**
 * What a location does: proxy to the route's upstream, or answer 503 naming the route when it has no endpoint.
 * `target` null means the route maps its prefix to itself: proxy_pass without a URI then sends the client's request
 * URI as received, whereas a URI part makes nginx send its decoded, normalised copy (`%2F` becomes `/`, `//` `/`).
 */
function body(plan: RoutePlan, target: string | null, dynamic: boolean): string[] {
  if (dynamic) return dynamicLocationBody(plan, target ?? "");
  if (plan.members.length > 0) return [`proxy_pass http://${tok.upstream(plan.upstream)}${target ?? ""};`];
  const { route } = plan;
  return [
    `default_type text/plain;`,
    `return 503 "no endpoint for route ${tok.path(route.prefix)} (${tok.name(backendName(route.primary))})\\n";`,
  ];
}

function block(match: string, lines: string[]): string {
  return [`        location ${match} {`, ...lines.map((l) => `            ${l}`), `        }`].join("\n");
}

/**
 * The locations of one route. A prefix `/p` maps `/p/x` to `<backend_path>/x` and `/p` itself to `<backend_path>`;
 * `/px` is not this route. nginx's prefix locations give "longest prefix wins" for free.
 */
export function renderLocations(plan: RoutePlan, dynamic = false, tagRoute = false): string {
  const prefix = tok.path(plan.route.prefix);
  const backendPath = tok.path(plan.route.backendPath);
  const identity = withSlash(prefix) === withSlash(backendPath);
  // The access record names the route by its upstream name, also when the route answers 503 without proxying.
  const tag = tagRoute ? [`set $nlb_route ${tok.upstream(plan.upstream)};`] : [];
  if (prefix === "/") return block("/", [...tag, ...body(plan, identity ? null : withSlash(backendPath), dynamic)]);
  return [
    block(`${prefix}/`, [...tag, ...body(plan, identity ? null : withSlash(backendPath), dynamic)]),
    block(`= ${prefix}`, [...tag, ...body(plan, identity ? null : withoutSlash(backendPath), dynamic)]),
  ].join("\n");
}
