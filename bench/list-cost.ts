/**
 * What the etcd v3 source's list costs at scale: fills a real etcd with N sites x 10 endpoints, then lists the prefix
 * into a fresh registry state again and again, alternating the variants, printing wall and CPU per list.
 * Not a figure of the suite: a tool to compare ways of listing.
 * Usage: node --import tsx bench/list-cost.ts [--sites 10000] [--rounds 5] [--variants client,bytes] [--page 5000] [--profile out.cpuprofile]
 *   A variant may name its page size: bytes:20000.
 *   client: pages decoded by the etcd3 client; bytes: pages read from their bytes (what the source uses).
 */
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import pino from "pino";
import { fillerEndpoints } from "./lib/context.js";
import { killAll, onCleanup } from "./lib/procs.js";
import { createRegistry, PREFIX } from "./lib/registry.js";
import { bytesPages, clientPages, listInto, sourceClient } from "../src/sources/etcd-v3.js";
import { RegistryState } from "../src/sources/registry-state.js";
import { keyPrefix } from "../src/model/backends.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? dflt) : dflt;
};
const SITES = Number(arg("sites", "10000"));
const ROUNDS = Number(arg("rounds", "5"));
const VARIANTS = arg("variants", "client,bytes").split(",");
const PAGE = Number(arg("page", "5000"));
/** Writes a CPU profile of the lists only (not the fill) to this path. */
const PROFILE = arg("profile", "");

async function main(): Promise<void> {
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < SITES; i++) set[`s${i}-web`] = fillerEndpoints(i, 10);
  const reg = await createRegistry("etcd");
  onCleanup(() => reg.close());
  const t = Date.now();
  await reg.replace(set);
  console.log(`filled ${SITES * 10} keys in ${Date.now() - t} ms`);
  const url = reg.args[1] ?? "";
  const prefix = reg.args[3] ?? PREFIX;
  const log = pino({ level: "silent" });
  const session = new Session();
  if (PROFILE) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const abort = new AbortController();
      const { client, dispose } = sourceClient({ etcdUrls: [url] }, undefined, abort.signal);
      const state = new RegistryState(prefix, () => undefined, log, [url]);
      await client.get("warm-up").string();
      const cpu = process.cpuUsage();
      const t0 = performance.now();
      const [kind, page] = variant.split(":");
      const read = kind === "client" ? clientPages(client) : bytesPages(client);
      await listInto(read, keyPrefix(prefix), state, Number(page ?? PAGE));
      const wall = performance.now() - t0;
      const used = process.cpuUsage(cpu);
      console.log(
        `round ${round} ${variant}: ${state.keys.size} keys, wall ${wall.toFixed(0)} ms, cpu ${((used.user + used.system) / 1000).toFixed(0)} ms`,
      );
      dispose();
      abort.abort();
    }
  }
  if (PROFILE) {
    const { profile } = await session.post("Profiler.stop");
    await writeFile(PROFILE, JSON.stringify(profile));
  }
}

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => killAll());
