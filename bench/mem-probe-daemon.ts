/**
 * Memory probe for issue 15: the real `nginx-lb run` on the scale figure's input (bench/figures/scale.ts: N routes x
 * 10 endpoints over etcd), started as the benchmark starts it; after the start and after a few routing changes it
 * prints the controller's RSS (and peak) and its own heap account after a full GC (through the inspector), and with
 * SNAP=1 has it write a heap snapshot (node --heapsnapshot-signal=SIGPWR: SIGUSR1/SIGUSR2 are the controller's own).
 *
 *   [PROD=1] SNAP=1 N=10000 node --import tsx bench/mem-probe-daemon.ts [dynamic|reload] [routes-mode dynamic|reload]
 *
 * SAMPLE=1 prints the allocation sites over the routing changes (the inspector's sampling heap profiler, garbage
 * included): what a change allocates, which RSS between collections follows.
 *
 * SURVIVORS=1 (with SAMPLE=1) leaves out what a young-generation collection freed.
 *
 * SPACES=1 adds, after each change, each heap space's used/physical MiB and the memory outside the heap (no collection
 * first); GAP=ms is the pause after each change is applied (500 by default).
 *
 * SMAPS=1 adds RssAnon/RssFile and the RSS of each mapping group (the node binary, anonymous memory, malloc heap).
 *
 * ADMIN=1 runs it as figure 10 does: the admin server on (a free loopback port), so traffic figures and per-route
 * metrics too; without it the admin server is off, as the test harness runs it.
 */
import WebSocket from "ws";
import { readFile, readdir, stat, mkdir } from "node:fs/promises";
import { startController, writeServices, type Controller } from "../test/helpers/controller.js";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { scaleInput, PROBE_HOST } from "./figures/scale.js";
import { LAST_HOST, routesTable } from "./figures/routes.js";
import { servicesJson, type RouteSpec } from "./lib/lb.js";
import { probe } from "./lib/http.js";
import { freePort, killAll, sleep, tempDir } from "./lib/procs.js";
import { createRegistry } from "./lib/registry.js";
import { loopbackIps, startBackends } from "../test/helpers/backends.js";

const N = Number(process.env["N"] ?? 10_000);
const CHANGES = Number(process.env["CHANGES"] ?? 4);
const mode = process.argv[2] === "reload" ? "reload" : "dynamic";
const routesMode = process.argv[3] === "dynamic" ? "dynamic" : process.argv[3] === "reload" ? "reload" : undefined;
const DIAG = process.env["DIAG"] ?? "/tmp/mp";
const BIN = fileURLToPath(new URL("../bin/nginx-lb", import.meta.url));

/** An inspector session with the controller: a call per DevTools protocol method, answered by id. */
async function session(port: number) {
  const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
  const ws = new WebSocket(list[0]?.webSocketDebuggerUrl ?? "");
  await new Promise((r, j) => ws.on("open", r).on("error", j));
  let id = 0;
  const call = (method: string, params: object = {}) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const my = ++id;
      const on = (d: Buffer) => {
        const m = JSON.parse(String(d)) as { id?: number; result?: Record<string, unknown> };
        if (m.id === my) {
          ws.off("message", on);
          resolve(m.result ?? {});
        }
      };
      ws.on("message", on);
      ws.send(JSON.stringify({ id: my, method, params }));
    });
  return { call, close: () => ws.close() };
}
/** The controller's own account through the inspector: two full GCs, then process.memoryUsage() and heap spaces. */
async function heapOf(port: number): Promise<string> {
  const { call, close } = await session(port);
  await call("HeapProfiler.collectGarbage");
  await call("HeapProfiler.collectGarbage");
  const r = await call("Runtime.evaluate", {
    expression:
      "JSON.stringify({...Object.fromEntries(Object.entries(process.memoryUsage()).map(([k, v]) => [k, Math.round(v / 104857.6) / 10])), " +
      "committed: Math.round(require('v8').getHeapStatistics().total_physical_size / 104857.6) / 10})",
    returnByValue: true,
    includeCommandLineAPI: true,
  });
  close();
  return `after GC (MiB): ${(r["result"] as { value: string }).value}`;
}

/** A node of the sampling heap profiler's tree. */
interface PNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: PNode[];
}
/** The allocation sites with the most bytes sampled, each with its three nearest callers. */
function topSites(root: PNode): string {
  const by = new Map<string, number>();
  const walk = (n: PNode, stack: string) => {
    const here = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}`;
    if (n.selfSize > 0) by.set(here + "  <- " + stack, (by.get(here + "  <- " + stack) ?? 0) + n.selfSize);
    for (const c of n.children)
      walk(c, here.split(" ")[0] + (stack ? " < " + stack.split(" < ").slice(0, 3).join(" < ") : ""));
  };
  walk(root, "");
  return [...by]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 40)
    .map(([k, v]) => `${(v / 1048576).toFixed(1).padStart(8)} MiB  ${k}`)
    .join("\n");
}

/** The heap's spaces and memory outside it as they are, no collection first (MiB). */
async function spacesOf(s: Awaited<ReturnType<typeof session>>): Promise<string> {
  const r = await s.call("Runtime.evaluate", {
    expression:
      "(() => { const m = (v) => Math.round(v / 1048576); const u = process.memoryUsage(); " +
      "return require('v8').getHeapSpaceStatistics().map((x) => x.space_name.replace('_space', '') + '=' + m(x.space_used_size) + '/' + m(x.physical_space_size)).join(' ') + " +
      "' ext=' + m(u.external) + ' ab=' + m(u.arrayBuffers); })()",
    returnByValue: true,
    includeCommandLineAPI: true,
  });
  return (r["result"] as { value: string }).value;
}

async function status(pid: number): Promise<string> {
  const s = await readFile(`/proc/${pid}/status`, "utf8");
  const base = ["VmRSS", "VmHWM", "RssAnon", "RssFile"]
    .map((k) => s.match(new RegExp(`${k}:\\s+(\\d+)`))?.[0] ?? "")
    .join(" ");
  if (!process.env["SMAPS"]) return base;
  const smaps = await readFile(`/proc/${pid}/smaps`, "utf8");
  const groups = new Map<string, number>();
  let name = "";
  for (const line of smaps.split("\n")) {
    const head = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
    if (head) {
      name = head[1] || "[anon]";
      continue;
    }
    const rss = line.match(/^Rss:\s+(\d+)/);
    if (rss) groups.set(name, (groups.get(name) ?? 0) + Number(rss[1]));
  }
  const top = [...groups]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8)
    .map(([k, v]) => `${k.split("/").pop()}=${Math.round(v / 1024)}M`);
  return `${base} | ${top.join(" ")}`;
}

async function main(): Promise<void> {
  const backends = await startBackends(loopbackIps(1));
  const live = { ip: loopbackIps(1)[0] ?? "", port: backends.port };
  // TABLE=routes: figure 10's table (N sites of one route each) and its changes (a new site each, the last one gone).
  const byRoutes = process.env["TABLE"] === "routes";
  const { routes, set } = byRoutes ? routesTable(N, live) : scaleInput(N, live);
  const probeHost = byRoutes ? LAST_HOST : PROBE_HOST;
  const inspect = await freePort();
  await mkdir(DIAG, { recursive: true });
  process.env["NODE_OPTIONS"] =
    `--inspect=127.0.0.1:${inspect}` +
    (process.env["SNAP"] === "1" ? ` --heapsnapshot-signal=SIGPWR --diagnostic-dir=${DIAG}` : "") +
    (process.env["EXTRA_NODE_OPTIONS"] ? ` ${process.env["EXTRA_NODE_OPTIONS"]}` : "");
  const reg = await createRegistry("etcd");
  let lb: {
    controller: Controller;
    servicesFile: string;
    port: number;
    appliesSince: (from: number) => Controller["lines"];
    stop: () => Promise<void>;
  } | null = null;
  try {
    await reg.replace(set);
    const t0 = performance.now();
    // As startLb, with start and wait timeouts a loaded machine cannot miss (nginx -t alone may take a minute there).
    const dir = await tempDir("nginx-lb-memprobe-");
    const servicesFile = join(dir, "services.json");
    const stateDir = join(dir, "state");
    const port = await freePort();
    await writeServices(servicesFile, servicesJson(routes, port));
    const controller = await startController({
      // PROD=1: the installed command's path (bin/nginx-lb on the compiled dist/, `npm run build` first) instead of
      // the test helper's tsx, whose compiler and source maps the controller would otherwise carry.
      ...(process.env["PROD"] === "1"
        ? { wrap: ["/bin/sh", "-c", `shift 4; exec "${process.execPath}" "${BIN}" "$@"`, "sh"] }
        : {}),
      services: servicesFile,
      stateDir,
      args: [
        ...reg.args,
        "--worker-processes",
        "2",
        "--endpoints-mode",
        mode,
        "--start-timeout",
        "600s",
        ...(routesMode ? ["--routes-mode", routesMode] : []),
        ...(process.env["ADMIN"] === "1" ? ["--admin-listen", `127.0.0.1:${await freePort()}`] : []),
      ],
      env: { NGINX_LB_LOG_LEVEL: "info" },
    });
    lb = {
      controller,
      servicesFile,
      port,
      appliesSince: (from: number) =>
        controller.lines.slice(from).filter((l) => l.msg === "config applied" || l.msg === "endpoints pushed"),
      stop: async () => {
        const pid = Number((await readFile(join(stateDir, "nginx.pid"), "utf8").catch(() => "0")).trim());
        await controller.stop();
        // A controller's stop stops its nginx too: this only catches one it left behind.
        try {
          if (pid > 0) process.kill(pid, "SIGQUIT");
        } catch {
          // Gone already.
        }
      },
    };
    for (let i = 0; i < 6000 && (await probe(lb.port, probeHost)).status !== 200; i++) await sleep(100);
    const pid = lb.controller.child.pid ?? 0;
    const load = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
    process.stdout.write(
      `endpoints ${mode}, routes ${routesMode ?? "default"}: serving in ${Math.round(performance.now() - t0)} ms; load ${load}; ${await status(pid)}\n`,
    );
    await sleep(3000);
    process.stdout.write(`start: ${await heapOf(inspect)}; ${await status(pid)}\n`);
    const sampler = process.env["SAMPLE"] === "1" ? await session(inspect) : null;
    await sampler?.call("HeapProfiler.startSampling", {
      samplingInterval: 16384,
      includeObjectsCollectedByMajorGC: true,
      // SURVIVORS=1: only what outlived a young-generation collection (promoted, or large objects kept), which is
      // what grows the old generation between full collections.
      includeObjectsCollectedByMinorGC: process.env["SURVIVORS"] !== "1",
    });
    const spaces = process.env["SPACES"] === "1" ? await session(inspect) : null;
    const from = lb.controller.lines.length;
    for (let k = 1; k <= CHANGES; k++) {
      const extra: RouteSpec = byRoutes
        ? { domain: `new${k}.bench.test`, prefix: "/", name: "live-web", port: live.port }
        : { domain: "extra.scale.bench.test", prefix: "/", name: "scale0-web", port: 8080 };
      const before = lb.appliesSince(from).length;
      await writeServices(lb.servicesFile, servicesJson(byRoutes || k % 2 ? [...routes, extra] : routes, lb.port));
      const deadline = Date.now() + 600_000;
      while (lb.appliesSince(from).length === before && Date.now() < deadline) await sleep(20);
      if (byRoutes) while ((await probe(lb.port, extra.domain)).status !== 200 && Date.now() < deadline) await sleep(2);
      await sleep(Number(process.env["GAP"] ?? 500));
      process.stdout.write(`change ${k}: ${await status(pid)}${spaces ? ` | ${await spacesOf(spaces)}` : ""}\n`);
    }
    if (sampler) {
      const prof = (await sampler.call("HeapProfiler.stopSampling"))["profile"] as { head: PNode };
      process.stdout.write(`allocation sites over the changes (sampled, incl. garbage):\n${topSites(prof.head)}\n`);
      sampler.close();
    }
    for (const l of lb.appliesSince(from)) process.stdout.write(`apply ms ${JSON.stringify(l["ms"])}\n`);
    await sleep(3000);
    const load2 = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
    process.stdout.write(`after ${CHANGES} routing changes: load ${load2}; ${await status(pid)}\n`);
    process.stdout.write(`${await heapOf(inspect)}; ${await status(pid)}\n`);
    if (process.env["SNAP"] === "1") {
      const before = new Set(await readdir(DIAG));
      process.kill(pid, "SIGPWR");
      for (let i = 0; i < 600; i++) {
        const now = (await readdir(DIAG)).filter((f) => !before.has(f) && f.endsWith(".heapsnapshot"));
        if (now.length > 0) {
          // Written in pieces: done when the size stays put for 3 s.
          for (let last = -1, j = 0; j < 300; j++) {
            const size = (await stat(`${DIAG}/${now[0]}`)).size;
            if (size === last && size > 0) break;
            last = size;
            await sleep(3000);
          }
          process.stdout.write(`snapshot ${DIAG}/${now[0]}\n`);
          break;
        }
        await sleep(200);
      }
    }
  } finally {
    await lb?.stop();
    await reg.close();
    await backends.close();
    await killAll();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
