import type { Applier } from "../reconciler/applier.js";
import type { HealthChecker } from "./checker.js";

/**
 * The applier the reconciler drives, telling the checker each target first: checks follow the routes and endpoints
 * being applied (new endpoints get probed, removed ones stop) without the reconciler knowing about checks.
 */
export function followTargets(applier: Applier, checker: HealthChecker): Applier {
  return {
    apply: (target, force) => {
      checker.follow(target.desired.services, target.desired.backends);
      return applier.apply(target, force);
    },
    state: () => applier.state(),
  };
}
