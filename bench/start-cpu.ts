/**
 * The pure part of a cold start, in one process, without etcd or nginx: the CPU each phase of the first apply costs
 * at N sites x 10 endpoints with routes pushed (services.json read, the registry's keys indexed, the first compile,
 * the start-up files encoded, state.json). A measuring tool for the cold start (issue 15), not a figure: CPU time
 * (user + system) per phase, so a loaded machine moves it less than wall time; each phase runs ROUNDS times, the
 * median is printed.
 *
 *   N=10000 ROUNDS=5 node --import tsx bench/start-cpu.ts
 */
import { cpuUsage } from "node:process";
import { loopbackIps } from "../test/helpers/backends.js";
import { routesTable } from "./figures/routes.js";
import { servicesJson } from "./lib/lb.js";
import { Table } from "../src/model/table.js";
import { BackendIndex } from "../src/model/backend-index.js";
import { readServicesText } from "../src/sources/services-text.js";
import { compile } from "../src/reconciler/target.js";
import { runRenderOptions, nginxPaths } from "../src/nginx/render-options.js";
import { encodeSets } from "../src/nginx/push-format.js";
import { encodeRoutes } from "../src/nginx/routes-push.js";
import { makeTlsPlaceholder } from "../src/nginx/tls-placeholder.js";
import { nodeTlsInspector } from "../src/tls/inspect.js";
import { shareServers } from "../src/model/share-servers.js";
import type { Services } from "../src/model/services.js";

const N = Number(process.env["N"] ?? 10_000);
const ROUNDS = Number(process.env["ROUNDS"] ?? 5);

const cpu = () => {
  const u = cpuUsage();
  return (u.user + u.system) / 1000;
};
const times = new Map<string, number[]>();
function phase<T>(name: string, fn: () => T): T {
  const t = cpu();
  const out = fn();
  const list = times.get(name) ?? [];
  list.push(cpu() - t);
  times.set(name, list);
  return out;
}

const { routes, set } = routesTable(N, { ip: loopbackIps(1)[0] ?? "127.0.0.2", port: 8080 });
const text = JSON.stringify({ version: "0.1", servers: servicesJson(routes, 8000) }, null, 2);
const kvs: [string, string][] = [];
for (const [name, eps] of Object.entries(set))
  for (const [ip, e] of Object.entries(eps)) kvs.push([`/lb/backends/${name}/ips/${ip}`, JSON.stringify(e)]);
const pair = makeTlsPlaceholder();
const options = runRenderOptions(nginxPaths("/tmp/nlb-start-cpu", "/usr/sbin/nginx"), {
  controlPort: 9999,
  pushToken: "0123456789abcdef0123456789abcdef",
  endpointsMode: "dynamic",
  routesMode: "dynamic",
  certsMode: "pushed",
  tlsPlaceholder: { cert: pair.cert, key: pair.key },
  workerProcesses: 2,
  trafficCounters: true,
});

for (let r = 0; r < ROUNDS; r++) {
  const read = phase("services.json read", () => readServicesText(text, null, { inspectTls: nodeTlsInspector }));
  if (!read.result.ok) throw new Error(JSON.stringify(read.result.errors.slice(0, 3)));
  const services: Services = phase("shareServers", () =>
    shareServers(null, (read.result as { value: Services }).value),
  );
  const index = new BackendIndex();
  phase("registry index (set x keys)", () => {
    for (const [k, v] of kvs) index.set(k, v);
  });
  const backends = phase("registry snapshot", () => index.snapshot().set);
  const target = phase("compile (previous null)", () => compile({ services, backends }, null, "dynamic", options));
  phase("encodeSets", () => encodeSets(1, target.endpoints ?? []));
  phase("encodeRoutes", () => encodeRoutes(2, target.routeTable ?? Table.empty()));
  phase("state.json text", () => JSON.stringify({ version: 1, services, backends }));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
let total = 0;
for (const [name, xs] of times) {
  total += median(xs);
  process.stdout.write(
    `${name.padEnd(30)} ${median(xs).toFixed(1).padStart(8)} ms cpu  (${xs.map((x) => x.toFixed(0)).join(", ")})\n`,
  );
}
process.stdout.write(`${"total".padEnd(30)} ${total.toFixed(1).padStart(8)} ms cpu\n`);
