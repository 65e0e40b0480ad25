/**
 * The routes figure (bench/figures/routes.ts, figure 10 of `npm run bench -- --only routes`) from the command line,
 * for one size or one routes mode at a time: one JSON row per run on stdout.
 *
 *   node --import tsx bench/routes.ts [--sizes 10,10000] [--modes dynamic,reload] [--changes N] [--registry file|etcd]
 *
 * Without --changes, each run makes the figure's number of changes (dynamic routes 100; reload fewer where slow).
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { loopbackIps } from "../test/helpers/backends.js";
import { changesFor, routesRun, routesTable } from "./figures/routes.js";
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
        const { row } = await routesRun({ registry, routesMode, sites, changes, workers: cpus().length, live, log });
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
