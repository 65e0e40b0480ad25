import type { RouteTable } from "../model/plan.js";
import { ROUTES_PATH } from "../render/routes-dynamic.js";
import { controlCall, partialElseWhole, PushError, type PushTarget } from "./endpoints-push.js";

/**
 * The text a routing-table push carries, and the start-up table file holds: nginx_lb_routes.lua's line format (which
 * documents the grammar and checks every line). The values were built from validated tokens (routeTable), so this
 * only lays them out. A partial push (`base`) lists only `changed` servers; one no longer in `table` is a line
 * without `=`, which removes it.
 *
 *   nginx-lb-routes version=<v>[ base=<b>]
 *   <port> <domain>=<prefix> <upstream> <backend_path> <backend>;...
 *   end servers=<n>
 */
export function encodeRoutes(
  version: number,
  table: RouteTable,
  partial?: { readonly base: number; readonly changed: readonly string[] },
): string {
  return [...routesText(version, table, partial)].join("");
}

/** `encodeRoutes` line by line (each with its newline), for a writer that never holds the whole text at once. */
export function* routesText(
  version: number,
  table: RouteTable,
  partial?: { readonly base: number; readonly changed: readonly string[] },
): Generator<string> {
  yield partial ? `nginx-lb-routes version=${version} base=${partial.base}\n` : `nginx-lb-routes version=${version}\n`;
  if (partial)
    for (const key of partial.changed) {
      const value = table.get(key);
      yield value === undefined ? `${key}\n` : `${key}=${value}\n`;
    }
  else for (const [key, value] of table) yield `${key}=${value}\n`;
  yield `end servers=${partial ? partial.changed.length : table.size}\n`;
}

/** What the controller last knew nginx to hold: the version and the table; null after a (re)start or a failed push. */
export interface PushedRoutes {
  readonly version: number;
  readonly table: RouteTable;
}

async function post(target: PushTarget, text: string): Promise<number> {
  const { version } = await controlCall(target, "POST", text, ROUTES_PATH);
  if (version === null) throw new PushError(200, `POST ${ROUTES_PATH}: nginx stored no version`);
  return version;
}

/** The routing-table version nginx holds, or null when none was pushed or loaded since its shared dict was created. */
export async function pushedRoutesVersion(target: PushTarget): Promise<number | null> {
  return (await controlCall(target, "GET", undefined, ROUTES_PATH)).version;
}

/**
 * Makes nginx hold `desired`: a partial push of the `changed` servers when nginx's table is known (`running`), a
 * whole push for `all` or when nginx refuses the partial one (409: it holds another version). Throws PushError when
 * nginx cannot be reached or refuses the whole push.
 */
export async function syncRoutes(
  target: PushTarget,
  running: PushedRoutes | null,
  desired: RouteTable,
  changed: readonly string[] | "all",
  nextVersion: number,
): Promise<PushedRoutes> {
  const whole = async () => ({ version: await post(target, encodeRoutes(nextVersion, desired)), table: desired });
  if (!running || changed === "all") return whole();
  if (changed.length === 0) return running;
  const text = encodeRoutes(nextVersion, desired, { base: running.version, changed });
  return partialElseWhole(async () => ({ version: await post(target, text), table: desired }), whole);
}
