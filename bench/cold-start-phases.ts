/**
 * Where a cold start goes (one run, the real `nginx-lb run` at debug level, the backends file): the sites of
 * bench/routes.ts, then every controller log line with its offset from the spawn, the first request the last site
 * answers, and nginx's own error-log lines. Not a figure of the suite: a tool to find the slow phase.
 * Usage: npx tsx bench/cold-start-phases.ts [--sites 10000] [--routes-mode dynamic] [--state <dir>] [--runs 1]
 *   [--registry etcd|file] (default: etcd where the suite uses it, as figure 10 does)
 *   --state reuses a state dir (a warm state dir: the controller's restart after a stop), else a new one per run.
 *   --compare <checkout>: odd runs start another checkout's compiled CLI (its dist/ built beforehand), so two builds
 *   alternate on the same machine; a summary of first log line -> last site served per build ends the output.
 *   Runs the compiled CLI as bench/lib/build.ts says (NGINX_LB_BENCH_TSX=1: the sources through tsx).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { loopbackIps } from "../test/helpers/backends.js";
import { startController, stopAllControllers, writeServices } from "../test/helpers/controller.js";
import { ensureCompiled, runCompiled } from "./lib/build.js";
import { fillerEndpoints } from "./lib/context.js";
import { probe } from "./lib/http.js";
import { servicesJson, type RouteSpec } from "./lib/lb.js";
import { freePort, killAll, onCleanup, sleep, tempDir } from "./lib/procs.js";
import { createRegistry, etcdSupported } from "./lib/registry.js";
import { startStaticBackends } from "./lib/static-nginx.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? dflt) : dflt;
};
const SITES = Number(arg("sites", "10000"));
const ROUTES_MODE = arg("routes-mode", "dynamic");
const RUNS = Number(arg("runs", "1"));
const STATE = arg("state", "");
const REGISTRY = arg("registry", etcdSupported() ? "etcd" : "file") === "file" ? "file" : "etcd";
const COMPARE = arg("compare", "");

async function main(): Promise<void> {
  onCleanup(stopAllControllers);
  if (runCompiled) await ensureCompiled();
  const backends = await startStaticBackends(loopbackIps(1), 1);
  const live = { ip: backends.ips[0] ?? "", port: backends.port };
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < SITES - 1; i++) {
    routes.push({ domain: `s${i}.bench.test`, prefix: "/", name: `s${i}-web`, port: 8080 });
    set[`s${i}-web`] = fillerEndpoints(i, 10);
  }
  routes.push({ domain: "last.bench.test", prefix: "/", name: "live-web", port: live.port });
  set["live-web"] = { [live.ip]: { weight: 1 } };
  const reg = await createRegistry(REGISTRY);
  await reg.replace(set);
  const dir = await tempDir("nginx-lb-bench-phases-");
  const services = join(dir, "services.json");
  const port = await freePort();
  await writeServices(services, servicesJson(routes, port));
  for (let run = 0; run < RUNS; run++) {
    const stateDir = STATE || join(dir, `state-${run}`);
    const t0 = Date.now();
    const other = COMPARE !== "" && run % 2 === 1;
    const c = await startController({
      compiled: runCompiled || other,
      ...(other ? { root: COMPARE } : {}),
      services,
      stateDir,
      // A wrapper script (e.g. one that adds --cpu-prof, or runs the compiled CLI): it gets `node --import tsx main.ts ...`.
      ...(process.env["PHASES_WRAP"] ? { wrap: [process.env["PHASES_WRAP"]] } : {}),
      args: [
        ...reg.args,
        "--worker-processes",
        "2",
        "--endpoints-mode",
        "dynamic",
        "--routes-mode",
        ROUTES_MODE,
        ...(process.env["PHASES_ARGS"] ?? "").split(" ").filter(Boolean),
      ],
    });
    let served = false;
    for (let i = 0; i < 60_000 && !served; i++) {
      served = (await probe(port, "last.bench.test")).status === 200;
      if (!served) await sleep(2);
    }
    const servedMs = Date.now() - t0;
    await sleep(500);
    console.log(`--- run ${run}: ${SITES} sites, routes mode ${ROUTES_MODE}, state ${stateDir}`);
    for (const l of c.lines) {
      const at = Date.parse(String(l["time"])) - t0;
      const rest = { ...l } as Record<string, unknown>;
      for (const k of ["time", "level", "msg", "pid", "hostname", "name", "upstreams", "endpoints"]) delete rest[k];
      console.log(`${String(at).padStart(6)} ms  ${l.msg}  ${JSON.stringify(rest).slice(0, 300)}`);
    }
    console.log(`${String(servedMs).padStart(6)} ms  << last site answered (served=${served})`);
    const first = c.lines[0] ? Date.parse(String(c.lines[0]["time"])) - t0 : NaN;
    const build = other ? COMPARE : "this tree";
    fromFirstLine.set(build, [...(fromFirstLine.get(build) ?? []), servedMs - first]);
    const errors = await readFile(join(stateDir, "logs/error.log"), "utf8").catch(() => "");
    for (const l of errors.split("\n").filter((x) => /nginx-lb|start worker|signal/.test(x)))
      console.log(`  nginx: ${l.slice(0, 200)}`);
    await c.stop();
    await sleep(500);
  }
  await reg.close();
  for (const [build, ms] of fromFirstLine)
    console.log(`first log line -> last site served, ${build}: ${ms.map((x) => Math.round(x)).join(", ")} ms`);
}

/** Per build: first log line -> last site served, ms, per run. */
const fromFirstLine = new Map<string, number[]>();

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => killAll());
