/**
 * What one routing change costs the controller before anything reaches nginx, step by step, at N sites of one route
 * and 10 endpoints each (figure 10's table): reading services.json again (incremental), sharing unchanged servers,
 * compile against the previous target, and the push text. Each change adds a new site and drops the previous
 * change's one, as figure 10 does. Prints the median and the max of each step, ms.
 *
 *   node --import tsx bench/compile-change.ts [--sites 10000] [--changes 50]
 */
import { parseArgs } from "node:util";
import { LUA_MODULES } from "../src/render/dynamic.js";
import { ROUTES_LUA_MODULES } from "../src/render/routes-dynamic.js";
import { CERTS_MODULE } from "../src/render/tls-dynamic.js";
import type { RenderOptions } from "../src/render/index.js";
import type { BackendSet } from "../src/model/backends.js";
import type { Services } from "../src/model/services.js";
import { shareServers } from "../src/model/share-servers.js";
import { readServicesText, type ServicesRead } from "../src/sources/services-text.js";
import { compile } from "../src/reconciler/target.js";
import { plan } from "../src/model/plan.js";
import { encodeRoutes } from "../src/nginx/routes-push.js";
import { fillerEndpoints } from "./lib/context.js";
import { servicesJson, type RouteSpec } from "./lib/lb.js";
import { median } from "./lib/stats.js";

const { values } = parseArgs({
  options: { sites: { type: "string", default: "10000" }, changes: { type: "string", default: "50" } },
});
const sites = Number(values.sites);
const changes = Number(values.changes);
const options: RenderOptions = {
  dir: "/tmp/nlb-bench",
  controlPort: 9999,
  endpointsMode: "dynamic",
  routesMode: "dynamic",
  certsMode: "pushed",
  pushToken: "0123456789abcdef0123456789abcdef",
  luaSource: Object.fromEntries([...LUA_MODULES, ...ROUTES_LUA_MODULES, CERTS_MODULE].map((m) => [m, "return {}\n"])),
  tlsPlaceholder: {
    cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    key: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n",
  },
};
const routes: RouteSpec[] = [];
const backends: Record<string, Record<string, { weight: number }>> = {};
for (let i = 0; i < sites; i++) {
  routes.push({ domain: `s${i}.bench.test`, prefix: "/", name: `s${i}-web`, port: 8080 });
  backends[`s${i}-web`] = fillerEndpoints(i, 10);
}
const text = (extra: RouteSpec[]) =>
  JSON.stringify({ version: "0.1", servers: servicesJson([...routes, ...extra], 8080) }, null, 2);

const t = () => performance.now();
/** CPU time of this process, ms: less sensitive to other load on the machine than the wall clock. */
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
let read: ServicesRead = readServicesText(text([]), null);
if (!read.result.ok) throw new Error(JSON.stringify(read.result.errors));
let services: Services = read.result.value;
const backendSet: BackendSet = backends;
let target = compile({ services, backends: backendSet }, null, "dynamic", options);
const steps: Record<string, number[]> = {
  read: [],
  "read cpu": [],
  share: [],
  compile: [],
  "compile cpu": [],
  plan: [],
  encode: [],
};
for (let k = 0; k < changes; k++) {
  const body = text([{ domain: `new${k}.bench.test`, prefix: "/", name: "live-web", port: 8080 }]);
  let t0 = t();
  const r0 = cpu();
  read = readServicesText(body, read);
  steps.read?.push(t() - t0);
  steps["read cpu"]?.push(cpu() - r0);
  if (!read.result.ok) throw new Error(JSON.stringify(read.result.errors));
  t0 = t();
  services = shareServers(services, read.result.value);
  steps.share?.push(t() - t0);
  t0 = t();
  const c0 = cpu();
  const next = compile({ services, backends: backendSet }, target, "dynamic", options);
  steps.compile?.push(t() - t0);
  steps["compile cpu"]?.push(cpu() - c0);
  t0 = t();
  const p = plan(
    {
      mode: "dynamic",
      generation: target.rendered.generation,
      endpoints: target.endpoints,
      routes: target.routeTable,
      certs: target.certs,
    },
    {
      mode: "dynamic",
      generation: next.rendered.generation,
      endpoints: next.endpoints,
      routes: next.routeTable,
      certs: next.certs,
      endpointsDelta: next.endpointsDelta,
      routesDelta: next.routesDelta,
    },
  );
  steps.plan?.push(t() - t0);
  t0 = t();
  if (p.action === "push" && next.routeTable && p.routes && p.routes !== "all")
    encodeRoutes(2, next.routeTable, { base: 1, changed: p.routes });
  else throw new Error(`expected a partial push, got ${JSON.stringify(p).slice(0, 200)}`);
  steps.encode?.push(t() - t0);
  target = next;
}
const r = (n: number) => Math.round(n * 100) / 100;
for (const [name, ms] of Object.entries(steps))
  console.log(`${name.padEnd(12)} median ${r(median(ms))} ms, max ${r(Math.max(...ms))} ms`);
