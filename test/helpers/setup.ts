/**
 * Runs before every test file (vitest `setupFiles`): whatever nginx a file started through the harness is stopped
 * when the file ends, even if the file forgot `afterAll(cleanupNginx)`. The harness starts nginx detached in its own
 * process group, as production does, so nothing else would stop it; the run's ledger (global-setup.ts) catches what
 * a crashed test process leaves.
 */
import { afterAll, inject } from "vitest";
import { cleanupNginx, recordMastersIn } from "./nginx.js";

recordMastersIn(inject("nginxLedger"));
afterAll(cleanupNginx);
