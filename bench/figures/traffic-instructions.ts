/**
 * Figure 7b, the traffic counters' cost counted in instructions (bench/lib/instructions.ts): the same two
 * configurations as figure 7 (dynamic mode, one route, `nginx-lb run` with its defaults, the admin server on, and
 * with `--no-traffic-log`). The controller's own requests to nginx (its counter reads) count too.
 */
import type { Context } from "../lib/context.js";
import { instructionsPerRequest, type InstructionsResult } from "../lib/instructions.js";

export type TrafficInstructionsResult = InstructionsResult;

export async function trafficInstructions(ctx: Context): Promise<TrafficInstructionsResult> {
  if (!ctx.modes.includes("dynamic")) return { skipped: "this build has no dynamic endpoints mode" };
  return instructionsPerRequest(ctx, { host: "traffic.bench.test", name: "tc-web" }, [
    { label: "default", lb: { mode: "dynamic", admin: true } },
    { label: "--no-traffic-log", lb: { mode: "dynamic", admin: true, args: ["--no-traffic-log"] } },
  ]);
}
