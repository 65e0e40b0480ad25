/**
 * Dynamic endpoints benchmark (one run, real nginx, node:http backends on loopback):
 *  - convergence: endpoint change -> first request answered by the new backend (compile, plan, push, request),
 *    p50/p99 over the first 50 of 200 changes, with 10 and 10,000 upstream keys, whole and partial pushes;
 *  - reloads per 200 endpoint changes (worker pids before/after);
 *  - requests/s and p99 latency through a dynamic route vs a static upstream of the same endpoints (wrk).
 * Usage: npx tsx bench/dynamic.ts [--trials 50] [--wrk-seconds 5] [--rounds 3] [--throughput-only]
 */
import { execFile } from "node:child_process";
import { Agent } from "node:http";
import { Table } from "../src/model/table.js";
import type { BackendSet } from "../src/model/backends.js";
import type { Services } from "../src/model/services.js";
import { partialPushBody, pushEndpoints } from "../src/nginx/endpoints-push.js";
import { plan } from "../src/model/plan.js";
import { compile } from "../src/reconciler/target.js";
import { bindRoutes, endpointSets } from "../src/render/index.js";
import { startBackends } from "../test/helpers/backends.js";
import { hostGet as get } from "../test/helpers/http.js";
import { services } from "../test/helpers/model.js";
import { cleanupNginx, serveNginx, type ServedNginx } from "../test/helpers/nginx.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TRIALS = arg("trials", 50);
const WRK_SECONDS = arg("wrk-seconds", 5);
const HOST = "bench.test";
const A = "127.0.0.2";
const B = "127.0.0.3";

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

/** A model with `routes` routes on one server: `/` plus `/r1`..; every route but `/` has its own backend name. */
function model(routes: number, port: number) {
  return (fp: number): Services =>
    services(HOST, fp, [
      { prefix: "/", app: "app", service: "web", port },
      ...Array.from({ length: routes - 1 }, (_, i) => ({
        prefix: `/r${i + 1}`,
        app: `filler${i + 1}`,
        service: "web",
        port,
      })),
    ]);
}

function fillers(routes: number): BackendSet {
  const out: Record<string, Record<string, { weight: number }>> = {};
  for (let i = 1; i < routes; i++)
    out[`filler${i}-web`] = { [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`]: { weight: 1 } };
  return out;
}

async function convergence(routes: number, port: number, partial: boolean): Promise<void> {
  // Starting nginx on 10,000 Lua-balanced upstreams takes longer than the applier's default confirm wait on a loaded
  // 2-core machine: give the start room, since what is measured here is the pushes after it.
  const ng = await serveNginx({ mode: "dynamic", services: model(routes, port), workers: 2, confirmTimeoutMs: 60_000 });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const target = ng.target;
  const routing = model(routes, port)(ng.port);
  try {
    const rest = fillers(routes);
    const desired = (ip: string): BackendSet => ({ ...rest, "app-web": { [ip]: { weight: 1 } } });
    let version = 1;
    // The controller's path: a target compiled against the previous one (only changed routes are re-joined), with
    // the render options this nginx runs on.
    const options = ng.renderOptions;
    let compiled = compile({ services: routing, backends: desired(A) }, null, "dynamic", options);
    let running = compiled.endpoints ?? Table.empty();
    await pushEndpoints(target, { version, upstreams: running });
    const workers = await ng.workerPids();
    const total: number[] = [];
    const build: number[] = [];
    const push: number[] = [];
    for (let t = 0; t < 200; t++) {
      const ip = t % 2 === 0 ? B : A;
      const started = performance.now();
      // What the controller does on an endpoint change. Whole: re-join every route and push everything.
      // Partial: compile against the previous target, plan, push only the sets that differ.
      const after = desired(ip);
      if (partial) compiled = compile({ services: routing, backends: after }, compiled, "dynamic", options);
      const next = partial ? (compiled.endpoints ?? Table.empty()) : endpointSets(bindRoutes(routing, after));
      const whole = { version: version + 1, upstreams: next };
      const decision = partial
        ? plan(
            { mode: "dynamic", generation: "g", endpoints: running },
            { mode: "dynamic", generation: "g", endpoints: next },
          )
        : null;
      const body =
        decision?.action === "push" && decision.upstreams !== "all"
          ? partialPushBody(version + 1, version, next, decision.upstreams)
          : whole;
      const built = performance.now();
      version = await pushEndpoints(target, body);
      running = next;
      const pushed = performance.now();
      // Bounded: a converged nginx answers right away; 1,000 tries is far beyond any sane convergence.
      for (let i = 0; i < 1000; i++) if ((await get(ng.port, HOST, "/", agent)).body === ip) break;
      if (t < TRIALS) {
        total.push(performance.now() - started);
        build.push(built - started);
        push.push(pushed - built);
      }
    }
    const reloads = JSON.stringify(await ng.workerPids()) === JSON.stringify(workers) ? 0 : "workers changed";
    const f = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2)} ms, p99 ${pct(xs, 99).toFixed(2)} ms`;
    console.log(
      `${routes} upstream keys, ${partial ? "partial push, incremental compile" : "whole push, full re-join"}: ` +
        `change -> first request on new backend ` +
        `${f(total)} [compile+plan ${f(build)}; push ${f(push)}]; reloads over 200 changes: ${reloads}`,
    );
  } finally {
    agent.destroy();
    await ng.stop();
  }
}

function wrk(port: number): Promise<{ rps: number; p99: string; errors: string }> {
  return new Promise((resolve, reject) =>
    execFile(
      "wrk",
      ["-t2", "-c64", `-d${WRK_SECONDS}s`, "--latency", "-H", `Host: ${HOST}`, `http://127.0.0.1:${port}/`],
      { timeout: (WRK_SECONDS + 30) * 1000 },
      (err, stdout) => {
        if (err) return reject(err);
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
        const p99 = /^\s+99%\s+(\S+)/m.exec(stdout)?.[1] ?? "?";
        const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(stdout)?.[0] ?? "none";
        resolve({ rps, p99, errors });
      },
    ),
  );
}

const ROUNDS = arg("rounds", 3);

/** Alternates wrk runs between a static upstream and a dynamic route, so machine noise hits both alike. */
async function throughput(port: number): Promise<void> {
  const endpoints: BackendSet = { "app-web": { [A]: { weight: 1 }, [B]: { weight: 1 } } };
  const runs: Record<"reload" | "dynamic", { rps: number; p99: string; errors: string }[]> = {
    reload: [],
    dynamic: [],
  };
  const started: ServedNginx[] = [];
  try {
    const ng = {
      reload: await serveNginx({ mode: "reload", services: model(1, port), backends: endpoints, workers: 1 }),
      dynamic: await serveNginx({ mode: "dynamic", services: model(1, port), workers: 1 }),
    };
    started.push(ng.reload, ng.dynamic);
    await ng.dynamic.push(endpoints);
    for (const mode of ["reload", "dynamic"] as const) await wrk(ng[mode].port); // warm-up, discarded
    for (let r = 0; r < ROUNDS; r++)
      for (const mode of ["reload", "dynamic"] as const) runs[mode].push(await wrk(ng[mode].port));
  } finally {
    await Promise.all(started.map((n) => n.stop()));
  }
  const median = (xs: number[]) => pct(xs, 50);
  for (const mode of ["reload", "dynamic"] as const) {
    const r = runs[mode];
    console.log(
      `${mode === "reload" ? "static upstream" : "dynamic route  "}: median ${median(r.map((x) => x.rps)).toFixed(0)} req/s ` +
        `(runs ${r.map((x) => x.rps.toFixed(0)).join(", ")}), p99 ${r.map((x) => x.p99).join(", ")}, errors: ${r.map((x) => x.errors).join(", ")}`,
    );
  }
  const ratio = median(runs.dynamic.map((x) => x.rps)) / median(runs.reload.map((x) => x.rps));
  console.log(`dynamic / static requests/s (medians): ${ratio.toFixed(3)}`);
}

const only = process.argv.includes("--throughput-only");
const pool = await startBackends([A, B], { reply: "address" });
try {
  if (!only)
    for (const routes of [10, 10_000])
      for (const partial of [false, true]) await convergence(routes, pool.port, partial);
  await throughput(pool.port);
} finally {
  await cleanupNginx();
  await pool.close();
}
