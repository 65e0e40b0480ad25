/**
 * The measurements behind docs/at-scale.md (controller memory, dynamic-mode Lua chunks). Builds the 10,000 x 10 input exactly as
 * bench/figures/scale.ts does and runs the production compile path as the reconciler does (first apply, then a
 * routing change compiled against the previous target).
 *
 *   node --expose-gc --import tsx bench/mem-probe.ts heap dynamic [snapshot-file]
 *   node --import tsx bench/mem-probe.ts render OUTDIR      # writes reload.conf, dynamic.conf for nginx -t trials
 */
import { writeHeapSnapshot } from "node:v8";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mustDesired } from "../test/helpers/model.js";
import { compile, type Target } from "../src/reconciler/target.js";
import { runRenderOptions, nginxPaths } from "../src/nginx/render-options.js";
import { writeInitialSets } from "../src/nginx/initial-sets.js";
import { fillerEndpoints } from "./lib/context.js";
import { servicesJson, type RouteSpec } from "./lib/lb.js";

const N = Number(process.env["N"] ?? 10_000);

function input(
  n: number,
  extra = false,
): { routes: RouteSpec[]; set: Record<string, Record<string, { weight: number }>> } {
  const routes: RouteSpec[] = [];
  const set: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 0; i < n; i++) {
    const name = `scale${i}-web`;
    routes.push({
      domain: `s${Math.floor(i / 10)}.scale.bench.test`,
      prefix: i % 10 ? `/r${i % 10}` : "/",
      name,
      port: 8080,
    });
    set[name] = fillerEndpoints(i, 10);
  }
  routes.push({ domain: "probe.scale.bench.test", prefix: "/", name: "scaleprobe-web", port: 8080 });
  set["scaleprobe-web"] = { "127.0.0.2": { weight: 1 } };
  if (extra) routes.push({ domain: "extra.scale.bench.test", prefix: "/", name: "scale0-web", port: 8080 });
  return { routes, set };
}

function options(mode: "reload" | "dynamic", dir: string, port = 9999) {
  return runRenderOptions(nginxPaths(dir, "/usr/sbin/nginx"), {
    controlPort: port,
    pushToken: "0123456789abcdef0123456789abcdef",
    endpointsMode: mode,
    listenHost: "127.0.0.1",
    workerProcesses: 2,
  });
}

const mib = (b: number) => Math.round((b / 1048576) * 10) / 10;
function mem(label: string): void {
  (globalThis as { gc?: () => void }).gc?.();
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  process.stdout.write(
    `${label}: rss ${mib(m.rss)} MiB heapUsed ${mib(m.heapUsed)} MiB external ${mib(m.external)} MiB\n`,
  );
}

const [cmd, arg, snap] = process.argv.slice(2);
if (cmd === "heap") {
  const mode = arg === "reload" ? "reload" : "dynamic";
  const opts = options(mode, "/var/lib/nginx-lb");
  mem("baseline");
  const a = input(N);
  const b = input(N, true);
  const desiredA = mustDesired({ version: "0.1", servers: servicesJson(a.routes, 8080) }, a.set);
  const desiredB = {
    ...mustDesired({ version: "0.1", servers: servicesJson(b.routes, 8080) }),
    backends: desiredA.backends,
  };
  mem("input parsed (two routing models, one registry)");
  let t0 = performance.now();
  let applied: Target | null = compile(desiredA, null, mode, opts);
  process.stdout.write(
    `compile #1 ${Math.round(performance.now() - t0)} ms, conf ${mib(applied.rendered.conf.length)} MiB\n`,
  );
  mem("after first compile (target held)");
  t0 = performance.now();
  const next = compile(desiredB, applied, mode, opts);
  process.stdout.write(`compile #2 (routing change) ${Math.round(performance.now() - t0)} ms\n`);
  mem("two targets held (previous + next, as during an apply)");
  applied = next;
  mem("one target held");
  if (snap) {
    writeHeapSnapshot(snap);
    process.stdout.write(`wrote ${snap}\n`);
  }
  // Keep it reachable until here.
  if (applied.routes.length === 0) process.exit(1);
} else if (cmd === "render") {
  const out = arg ?? "/tmp/mem-probe";
  mkdirSync(out, { recursive: true });
  const a = input(N);
  const desired = mustDesired({ version: "0.1", servers: servicesJson(a.routes, 18080) }, a.set);
  for (const mode of ["reload", "dynamic"] as const) {
    const dir = join(out, mode);
    mkdirSync(join(dir, "lua"), { recursive: true });
    const t = compile(desired, null, mode, options(mode, dir, mode === "reload" ? 19991 : 19992));
    writeFileSync(join(dir, "nginx.conf"), t.rendered.conf);
    for (const f of t.rendered.files) writeFileSync(join(dir, f.path), f.content);
    if (t.endpoints) await writeInitialSets(dir, 1, t.endpoints);
    process.stdout.write(`${mode}: ${dir}/nginx.conf ${mib(t.rendered.conf.length)} MiB\n`);
    if (mode !== "dynamic") continue;
    // (b) identical Lua blocks: the route's name and 503 text in `set` variables, read through ngx.var.
    const b = join(out, "dynamic-set");
    mkdirSync(join(b, "lua"), { recursive: true });
    const conf = t.rendered.conf
      .replaceAll(dir, b)
      .replace(/balance\("[^"]*"\)/g, "balance()")
      .replace(
        /access_by_lua_block \{ require\("nginx_lb_balancer"\)\.access\("([^"]*)", "([^"]*)\\n"\) \}/g,
        'set $nlb_upstream $1;\n            set $nlb_empty "$2";\n            access_by_lua_block { require("nginx_lb_balancer").access() }',
      )
      .replace(/listen 127.0.0.1:19992;/, "listen 127.0.0.1:19993;");
    writeFileSync(join(b, "nginx.conf"), conf);
    for (const f of t.rendered.files) writeFileSync(join(b, f.path), f.content);
    if (t.endpoints) await writeInitialSets(b, 1, t.endpoints);
    process.stdout.write(`dynamic-set: ${b}/nginx.conf ${mib(conf.length)} MiB\n`);
  }
} else {
  process.stderr.write("usage: mem-probe heap reload|dynamic [snapshot] | render OUTDIR\n");
  process.exit(2);
}
