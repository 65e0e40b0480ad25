/**
 * Instructions nginx's workers execute per request, counted by valgrind's callgrind: `nginx-lb run` is started with
 * `--nginx` naming a wrapper that runs nginx under callgrind. Requests/s on a shared two-core machine swing by more
 * per round than the few per cent some figures judge; an instruction count does not depend on what else the machine
 * runs. Each variant runs twice: a warm-up of keep-alive requests (LuaJIT compiles the hot paths), then either a
 * fixed number more or an idle wait as long as those took; the workers' totals (callgrind writes them when a worker
 * exits) differ by those requests' instructions. What comes with time rather than requests (timers, the
 * controller's reads) is in both totals alike. valgrind's gdbserver does not follow nginx's fork into the workers,
 * so the count is not taken by zeroing and dumping the running workers (callgrind_control).
 */
import { execFile } from "node:child_process";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { NGINX, tempDir } from "../../test/helpers/nginx.js";
import type { Context } from "./context.js";
import { startLb, type Lb, type LbOptions, type RouteSpec } from "./lb.js";
import { createRegistry } from "./registry.js";

const run = promisify(execFile);

export interface InstructionsTrial {
  readonly label: string;
  readonly round: number;
  /** Instructions nginx's workers executed per request (callgrind's Ir over the window / requests). */
  readonly perRequest: number;
}

/** One configuration to count: its label and what it passes to startLb beside the route, registry and wrapper. */
export interface InstructionsVariant {
  readonly label: string;
  readonly lb: Pick<LbOptions, "mode" | "routesMode" | "admin"> & { readonly args?: readonly string[] };
}

export type InstructionsResult =
  | {
      readonly requests: number;
      readonly warmup: number;
      readonly concurrency: number;
      readonly workers: number;
      /** The two variants' labels, in the order of `ratios`. */
      readonly labels: readonly [string, string];
      readonly trials: InstructionsTrial[];
      /** The first variant's instructions per request over the second's, per round. */
      readonly ratios: number[];
    }
  | { readonly skipped: string };

/** `n` GET requests for `host` over `concurrency` keep-alive connections; how many were not answered 200. */
async function fixedRequests(port: number, host: string, n: number, concurrency: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let bad = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = request({ host: "127.0.0.1", port, path: "/", agent, headers: { host } }, (res) => {
        if (res.statusCode !== 200) bad++;
        res.resume();
        res.on("end", resolve);
        res.on("error", () => resolve());
      });
      req.setTimeout(60_000, () => req.destroy());
      req.on("error", () => {
        bad++;
        resolve();
      });
      req.end();
    });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        await one();
      }
    }),
  );
  agent.destroy();
  return bad;
}

async function workersOf(lb: Lb): Promise<number[]> {
  const master = await lb.nginxPid();
  const children = await readFile(`/proc/${master}/task/${master}/children`, "utf8").catch(() => "");
  return children.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** The instructions in callgrind's file of `pid`, written when that process exits (waits up to 30 s for it). */
async function instructionsOf(dir: string, pid: number): Promise<number> {
  for (let i = 0; ; i++) {
    const text = await readFile(join(dir, `callgrind.${pid}`), "utf8").catch(() => "");
    const m = /^totals: (\d+)/m.exec(text);
    if (m) return Number(m[1]);
    if (i >= 300) throw new Error(`callgrind wrote no instruction total for nginx worker ${pid}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Counts each variant's instructions per request through one route (`name` on a backend of the run, Host `host`),
 * in rounds that alternate which variant goes first. Skipped without valgrind.
 */
export async function instructionsPerRequest(
  ctx: Context,
  route: { readonly host: string; readonly name: string },
  variants: readonly [InstructionsVariant, InstructionsVariant],
): Promise<InstructionsResult> {
  const found = await run("valgrind", ["--version"]).then(
    () => true,
    () => false,
  );
  if (!found) return { skipped: "valgrind is not installed (Debian: apt-get install valgrind)" };
  const requests = ctx.quick ? 2000 : 10_000;
  const warmup = ctx.quick ? 1000 : 3000;
  const concurrency = 8;
  const rounds = ctx.quick ? 1 : 2;
  const dir = await tempDir("nginx-lb-bench-cg-");
  const out = join(dir, "out");
  // nginx's workers write their dumps after dropping to nginx's user: the way in is open, the out dir writable.
  await chmod(dir, 0o711);
  await run("mkdir", ["-m", "1777", out]);
  const wrapper = join(dir, "nginx");
  await writeFile(
    wrapper,
    `#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=${out}/callgrind.%p ${NGINX} "$@"\n`,
  );
  await chmod(wrapper, 0o755);
  const spec: RouteSpec = { domain: route.host, prefix: "/", name: route.name, port: ctx.backends.port };
  // The workers' instructions from their fork to their exit, after `n` requests past the warm-up, then an idle wait
  // of `idleMs`. Returns the total and how long the `n` requests took.
  const workerTotal = async (v: InstructionsVariant, n: number, idleMs: number) => {
    const reg = await createRegistry(ctx.registry);
    let lb: Lb | null = null;
    let workers: number[] = [];
    let ms = 0;
    try {
      await reg.put(route.name, ctx.backends.ips[0] ?? "");
      lb = await startLb({
        ...v.lb,
        routes: [spec],
        registry: reg,
        workers: ctx.workers,
        args: [...(v.lb.args ?? []), "--nginx", wrapper],
      });
      const send = (count: number) => fixedRequests(lb?.port ?? 0, route.host, count, concurrency);
      if ((await send(warmup)) > 0) throw new Error(`${v.label}: warm-up failed`);
      const started = performance.now();
      if ((await send(n)) > 0) throw new Error(`${v.label}: requests failed`);
      ms = performance.now() - started;
      await new Promise((r) => setTimeout(r, idleMs));
      workers = await workersOf(lb);
    } finally {
      await lb?.stop();
      await reg.close();
    }
    let total = 0;
    for (const pid of workers) total += await instructionsOf(out, pid);
    return { total, ms };
  };
  const trials: InstructionsTrial[] = [];
  for (let round = 0; round < rounds; round++)
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + round) % variants.length] ?? variants[0];
      ctx.log(`instructions: round ${round + 1}/${rounds}, ${v.label}`);
      const more = await workerTotal(v, requests, 0);
      const base = await workerTotal(v, 0, more.ms);
      trials.push({ label: v.label, round, perRequest: (more.total - base.total) / requests });
    }
  const per = (label: string) => trials.filter((t) => t.label === label).sort((a, b) => a.round - b.round);
  const second = per(variants[1].label);
  return {
    requests,
    warmup,
    concurrency,
    workers: ctx.workers,
    labels: [variants[0].label, variants[1].label],
    trials,
    ratios: per(variants[0].label).map((t, i) => t.perRequest / (second[i]?.perRequest ?? NaN)),
  };
}
