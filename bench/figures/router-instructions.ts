/**
 * Figure 10b, the Lua router's cost counted in instructions (bench/lib/instructions.ts): one site, dynamic endpoints,
 * `nginx-lb run` with its defaults (the admin server on, so the traffic counters too), its routes pushed to the
 * router (the default) and rendered as locations (`--routes-mode reload`). Figure 10 judges requests/s through a
 * pushed site against a rendered one at 0.9; on a shared machine that ratio swings by more per round than the gap.
 */
import type { Context } from "../lib/context.js";
import { instructionsPerRequest, type InstructionsResult } from "../lib/instructions.js";

export async function routerInstructions(ctx: Context): Promise<InstructionsResult> {
  if (!ctx.modes.includes("dynamic")) return { skipped: "this build has no dynamic endpoints mode" };
  return instructionsPerRequest(ctx, { host: "router.bench.test", name: "rt-web" }, [
    { label: "routes pushed", lb: { mode: "dynamic", routesMode: "dynamic", admin: true } },
    { label: "routes rendered", lb: { mode: "dynamic", routesMode: "reload", admin: true } },
  ]);
}
