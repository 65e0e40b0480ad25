/**
 * The routes figure (bench/figures/routes.ts, figure 10 of `npm run bench -- --only routes`) from the command line,
 * for one size or one routes mode at a time: one JSON row per run on stdout.
 *
 *   node --import tsx bench/routes.ts [--sizes 10,10000] [--modes dynamic,reload] [--changes N] [--warmup N]
 *                                     [--registry file|etcd]
 *
 * Without --changes and --warmup, each run makes the figure's numbers (dynamic routes 100 after 100 for warm-up;
 * reload fewer where slow, no warm-up).
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { loopbackIps } from "../test/helpers/backends.js";
import { changesFor, routesRun, routesTable, warmupFor } from "./figures/routes.js";
import type { Mode } from "./lib/lb.js";
import { availableModes } from "./lib/lb.js";
import { killAll } from "./lib/procs.js";
import { createRegistry, etcdSupported, type RegistryKind } from "./lib/registry.js";
import { startStaticBackends } from "./lib/static-nginx.js";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "10,10000" },
      modes: { type: "string", default: "dynamic,reload" },
      changes: { type: "string" },
      warmup: { type: "string" },
      registry: { type: "string" },
    },
  });
  if (!(await availableModes()).includes("dynamic")) throw new Error("this build has no dynamic endpoints mode");
  const kind = (values.registry ?? (etcdSupported() ? "etcd" : "file")) as RegistryKind;
  const backends = await startStaticBackends(loopbackIps(1), 1);
  const live = { ip: backends.ips[0] ?? "", port: backends.port };
  const log = (msg: string) => process.stderr.write(`${msg}\n`);
  for (const sites of values.sizes.split(",").map(Number)) {
    const registry = await createRegistry(kind);
    try {
      await registry.replace(routesTable(sites, live).set);
      for (const routesMode of values.modes.split(",") as Mode[]) {
        const changes = values.changes ? Number(values.changes) : changesFor(routesMode, sites, false);
        const warmup = values.warmup ? Number(values.warmup) : warmupFor(routesMode, sites, false);
        const workers = cpus().length;
        const { row } = await routesRun({ registry, routesMode, sites, changes, warmup, workers, live, log });
        console.log(JSON.stringify(row));
      }
    } finally {
      await registry.close();
    }
  }
}

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => killAll());
