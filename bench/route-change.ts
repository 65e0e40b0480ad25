/**
 * One routing change at N sites x 10 endpoints in dynamic routes mode, as `nginx-lb run --routes-mode dynamic` does it
 * in-process (no nginx): the services file parsed and validated, its unchanged servers shared with the last model
 * (as the services file source emits it), the first apply compiled, then a change (one new site) compiled against it,
 * planned against what the previous push left in nginx, and the push body encoded. The input is the routes figure's
 * (bench/figures/routes.ts: N sites of one route each).
 *
 *   node --import tsx bench/route-change.ts [N] [rounds]
 *   node --cpu-prof --cpu-prof-dir /tmp/prof --import tsx bench/route-change.ts 10000 3
 */
import { parseBackendsFile } from "../src/model/backends.js";
import { plan, type AppliedState } from "../src/model/plan.js";
import { parseServices, type Services } from "../src/model/services.js";
import { shareServers } from "../src/model/share-servers.js";
import { nodeTlsInspector } from "../src/tls/inspect.js";
import { compile, type Target } from "../src/reconciler/target.js";
import { encodeRoutes } from "../src/nginx/routes-push.js";
import { nginxPaths, runRenderOptions } from "../src/nginx/render-options.js";
import { makeTlsPlaceholder } from "../src/nginx/tls-placeholder.js";
import { fillerEndpoints } from "./lib/context.js";
import { servicesJson, type RouteSpec } from "./lib/lb.js";

const N = Number(process.argv[2] ?? 10_000);
const ROUNDS = Number(process.argv[3] ?? 5);

function routesOf(n: number): { routes: RouteSpec[]; set: Record<string, Record<string, { weight: number }>> } {
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < n - 1; i++) {
    routes.push({ domain: `s${i}.bench.test`, prefix: "/", name: `s${i}-web`, port: 8080 });
    set[`s${i}-web`] = fillerEndpoints(i, 10);
  }
  routes.push({ domain: "last.bench.test", prefix: "/", name: "live-web", port: 8081 });
  set["live-web"] = { "127.0.0.2": { weight: 1 } };
  return { routes, set };
}

/** As the services file source: the file's text parsed and validated into a new model. */
function load(text: string): Services {
  const s = parseServices(JSON.parse(text), { inspectTls: nodeTlsInspector });
  if (!s.ok) throw new Error(JSON.stringify(s.errors.slice(0, 3)));
  return s.value;
}

/** What nginx holds after `t` was applied (the applier's view after a push); `wanted`: as the applier plans it. */
function applied(t: Target, wanted = false): AppliedState {
  return {
    mode: t.mode,
    generation: t.rendered.generation,
    endpoints: t.endpoints,
    routes: t.routeTable,
    certs: t.certs,
    ...(wanted ? { endpointsDelta: t.endpointsDelta, routesDelta: t.routesDelta } : {}),
  };
}

const options = runRenderOptions(nginxPaths("/var/lib/nginx-lb", "/usr/sbin/nginx"), {
  controlPort: 9999,
  pushToken: "0123456789abcdef0123456789abcdef",
  endpointsMode: "dynamic",
  routesMode: "dynamic",
  certsMode: "pushed",
  tlsPlaceholder: makeTlsPlaceholder(),
  listenHost: "127.0.0.1",
  workerProcesses: 2,
});

const { routes, set } = routesOf(N);
const b = parseBackendsFile(set);
if (!b.ok) throw new Error("bad backends");
const backends = b.value;
const ms = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;
const lines: string[] = [];

let t0 = performance.now();
const first = { services: load(JSON.stringify({ version: "0.1", servers: servicesJson(routes, 8080) })), backends };
const parse0 = ms(t0);
t0 = performance.now();
let prev = compile(first, null, "dynamic", options);
lines.push(`first apply: parse ${parse0} ms, compile ${ms(t0)} ms`);
for (let k = 0; k < ROUNDS; k++) {
  const extra: RouteSpec = { domain: `new${k}.bench.test`, prefix: "/", name: "live-web", port: 8081 };
  const text = JSON.stringify({ version: "0.1", servers: servicesJson([...routes, extra], 8080) });
  t0 = performance.now();
  const parsed = load(text);
  const parseMs = ms(t0);
  t0 = performance.now();
  // As the services file source emits it: unchanged servers are the last model's objects.
  const services = shareServers(prev.desired.services, parsed);
  const shareMs = ms(t0);
  t0 = performance.now();
  const next = compile({ services, backends }, prev, "dynamic", options);
  const compileMs = ms(t0);
  t0 = performance.now();
  const p = plan(applied(prev), applied(next, true));
  const planMs = ms(t0);
  t0 = performance.now();
  const body =
    p.action === "push" && p.routes !== "all" && p.routes && next.routeTable
      ? encodeRoutes(2, next.routeTable, { base: 1, changed: p.routes })
      : "";
  const encodeMs = ms(t0);
  const what =
    p.action === "push"
      ? `push upstreams ${p.upstreams === "all" ? "all" : p.upstreams.length} routes ${p.routes === "all" ? "all" : (p.routes?.length ?? 0)} body ${body.length} B`
      : p.action;
  lines.push(
    `change ${k}: parse ${parseMs} ms, share ${shareMs} ms, compile ${compileMs} ms, plan ${planMs} ms, encode ${encodeMs} ms -> ${what}`,
  );
  // The next change replaces this one's new site with its own (two servers change).
  prev = next;
}
process.stdout.write(`N=${N} sites x 10 endpoints, dynamic routes\n${lines.join("\n")}\n`);
