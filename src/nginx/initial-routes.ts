import { join } from "node:path";
import type { RouteTable } from "../model/plan.js";
import { INITIAL_ROUTES_FILE } from "../render/routes-dynamic.js";
import { writeStartupFile, type InitialSetsOutcome } from "./initial-sets.js";
import { routesText } from "./routes-push.js";

/**
 * Keeps the routing table nginx holds at `version` in `<dir>/routes.table` (0600, the push format), which a new nginx
 * master loads at start (init_by_lua), so a restart serves every site at once instead of 404 until the next push.
 */
export function writeInitialRoutes(dir: string, version: number, table: RouteTable): Promise<InitialSetsOutcome> {
  return writeStartupFile(
    join(dir, INITIAL_ROUTES_FILE),
    routesText(version, table),
    "the start-up routing table",
    "a restarted nginx would answer 404 until the next push",
  );
}
