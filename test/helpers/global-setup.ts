/**
 * Vitest global setup: a ledger of the nginx masters the test processes start (test/helpers/nginx.ts records each
 * one and removes it when stopped). Files stop their own nginx when they end (setup.ts); the teardown stops what a
 * crashed or killed test process left behind, since nginx runs in its own process group as in production.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    nginxLedger: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const ledger = await mkdtemp(join(tmpdir(), "nginx-lb-test-masters-"));
  project.provide("nginxLedger", ledger);
  return async () => {
    for (const name of await readdir(ledger)) {
      const pid = Number(name);
      const dir = await readFile(join(ledger, name), "utf8").catch(() => "");
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      // Only the master this run started: the pid must still name its own state dir (pids are reused).
      if (pid > 1 && dir !== "" && cmdline.includes(dir)) {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {
          // Gone meanwhile.
        }
      }
    }
    await rm(ledger, { recursive: true, force: true });
  };
}
