/**
 * Figure 7, the routing table in etcd: two real `nginx-lb run --services-etcd-prefix` controllers (each its own
 * nginx on its own loopback address) on the run's etcd, the table written by the real `nginx-lb services push`.
 * For 10 and 10,000 servers: the push of the whole table (its time, the controllers' convergence, and the etcd
 * requests it cost, read from etcd's own metrics), then one route changed per push, timed until both instances serve
 * it, and each controller's memory with that table.
 */
import { Etcd3 } from "etcd3";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startController, type Controller } from "../../test/helpers/controller.js";
import { get } from "../../test/helpers/http.js";
import { type Context, round1 } from "../lib/context.js";
import { freePort, memoryOf, onCleanup, sleep, spawnTracked, tempDir } from "../lib/procs.js";
import { EtcdRegistry } from "../lib/registry.js";
import { median, summarize, type Summary } from "../lib/stats.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
// Sorts after every filler server: the push writes additions in key order, so it is in the last transaction.
const PROBE = "zz-probe.services.bench.test";
const HOSTS = ["127.0.0.60", "127.0.0.61"] as const;

export interface ServicesRow {
  readonly servers: number;
  /** `services push` of the whole table into an empty prefix. */
  readonly push: {
    /** The CLI process: start to exit (validation of the file, the diff, every transaction). */
    readonly ms: number;
    /** CLI start -> both instances serve the probe server, whose key is in the push's last transaction. */
    readonly servedMs: number;
    readonly writes: number;
    /** Transactions, as the CLI reported them. */
    readonly txns: number;
    /** etcd's own counts over the push (grpc_server_handled_total by method, etcd_server_proposals_committed_total). */
    readonly etcd: { readonly txn: number; readonly range: number; readonly proposals: number };
  };
  /** One route changed per push (the probe server's backend, toggled). */
  readonly change: {
    /** The push's commit (seen by a watch in the benchmark) -> both instances serve the new backend. */
    readonly commitToServed: Summary;
    /** The CLI started -> both instances serve it (includes the CLI's start under tsx, about a second). */
    readonly cliToServed: Summary;
    /** The controllers' own account of their applies during the changes (both controllers), median ms. */
    readonly apply: {
      readonly render: number;
      readonly test: number;
      readonly reload: number;
      readonly total: number;
      readonly n: number;
    };
  };
  readonly controllerRssMiB: readonly number[];
  readonly error?: string;
}

interface CliResult {
  code: number | null;
  stderr: string;
  ms: number;
}

async function push(file: string, etcdUrl: string, prefix: string): Promise<CliResult> {
  const t0 = performance.now();
  const child = spawnTracked(
    process.execPath,
    ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "services", "push", file],
    {
      cwd: ROOT,
      env: { ...process.env, NGINX_LB_ETCD_ENDPOINTS: etcdUrl, NGINX_LB_SERVICES_ETCD_PREFIX: prefix },
    },
  );
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  return { code, stderr, ms: performance.now() - t0 };
}

/** etcd's counters that a push moves: handled Txn and Range RPCs, committed proposals. */
async function etcdCounters(url: string): Promise<{ txn: number; range: number; proposals: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sum = (re: RegExp) =>
    text
      .split("\n")
      .filter((l) => re.test(l))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  return {
    txn: sum(/^grpc_server_handled_total\{.*grpc_method="Txn"/),
    range: sum(/^grpc_server_handled_total\{.*grpc_method="Range"/),
    proposals: sum(/^etcd_server_proposals_committed_total /),
  };
}

/** Which backend answers the probe through this instance ("" for none). */
async function backendOf(host: string, port: number): Promise<string> {
  const r = await get(`http://${host}:${port}/`, { host: PROBE, timeoutMs: 2000 }).catch(() => null);
  return r?.status === 200 ? String(r.headers["x-backend"] ?? "") : "";
}

/** Polls both instances until each serves `ip` for the probe; resolves with the time it was true for both. */
async function servedByAll(port: number, ip: string, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  const at = await Promise.all(
    HOSTS.map(async (h) => {
      while (performance.now() < deadline) {
        if ((await backendOf(h, port)) === ip) return performance.now();
        await sleep(5);
      }
      throw new Error(`${h} did not serve ${PROBE} from ${ip} within ${timeoutMs} ms`);
    }),
  );
  return Math.max(...at);
}

export async function services(ctx: Context): Promise<ServicesRow[]> {
  if (ctx.registry !== "etcd") {
    ctx.log("services: needs etcd (--registry etcd); skipped");
    return [];
  }
  const sizes = ctx.quick ? [10, 1000] : [10, 10_000];
  const rows: ServicesRow[] = [];
  const [ip0 = "", ip1 = ""] = ctx.backends.ips;
  for (const n of sizes) {
    ctx.log(`services: ${n} servers in etcd, two controllers`);
    const reg = await EtcdRegistry.create();
    const etcdUrl = reg.args[reg.args.indexOf("--etcd-endpoints") + 1] ?? "";
    const prefix = `/lb/services-bench-${n}`;
    await reg.replace({
      "p0-web": { [ip0]: { weight: 1 } },
      "p1-web": { [ip1]: { weight: 1 } },
    });
    const dir = await tempDir("nginx-lb-bench-services-");
    const port = await freePort();
    const server = (domain: string, app: string) => ({
      domain_name: domain,
      frontend_port: port,
      routes: { "/": { app, service: "web", port: ctx.backends.port } },
    });
    const fillers = Array.from({ length: n - 1 }, (_, i) => server(`s${i}.services.bench.test`, "p0"));
    const write = async (name: string, probeApp: string) => {
      const f = join(dir, name);
      await writeFile(f, JSON.stringify({ version: "0.1", servers: [...fillers, server(PROBE, probeApp)] }));
      return f;
    };
    const files = [await write("p0.json", "p0"), await write("p1.json", "p1")] as const;
    const controllers: Controller[] = [];
    const mode = ctx.modes.includes("dynamic") ? "dynamic" : ctx.modes[0];
    const client = new Etcd3({ hosts: etcdUrl });
    try {
      for (const host of HOSTS) {
        const c = await startController({
          stateDir: join(dir, `state-${host}`),
          services: join(dir, "absent.json"),
          args: [
            "--listen-host",
            host,
            ...reg.args,
            "--services-etcd-prefix",
            prefix,
            // The default a user runs: dynamic endpoints (and so routes pushed) wherever this build offers them.
            ...(mode ? ["--endpoints-mode", mode] : []),
          ],
          env: { NGINX_LB_LOG_LEVEL: "info" },
        });
        controllers.push(c);
        onCleanup(async () => void (await c.stop()));
      }
      const before = await etcdCounters(etcdUrl);
      const pushedAt = performance.now();
      const first = await push(files[0], etcdUrl, prefix);
      const after = await etcdCounters(etcdUrl);
      if (first.code !== 0) throw new Error(`services push of ${n} servers failed: ${first.stderr.trim()}`);
      const servedAt = await servedByAll(port, ip0, 300_000);
      const applied = /applied (\d+) write\(s\) in (\d+) transaction\(s\)/.exec(first.stderr);
      const pushRow = {
        ms: Math.round(first.ms),
        servedMs: Math.round(servedAt - pushedAt),
        writes: Number(applied?.[1] ?? NaN),
        txns: Number(applied?.[2] ?? NaN),
        etcd: {
          txn: after.txn - before.txn,
          range: after.range - before.range,
          proposals: after.proposals - before.proposals,
        },
      };

      // One route changed per push: the probe's backend toggled; a watch timestamps the commit.
      const key = `${prefix}/${PROBE}:${port}`;
      let committedAt = NaN;
      const watcher = await client.watch().key(key).create();
      watcher.on("put", () => (committedAt = performance.now()));
      const commitToServed: number[] = [];
      const cliToServed: number[] = [];
      const rounds = ctx.quick ? 3 : n >= 10_000 ? 10 : 20;
      const from = controllers.map((c) => c.lines.length);
      try {
        for (let k = 1; k <= rounds; k++) {
          committedAt = NaN;
          const t0 = performance.now();
          const r = await push(files[k % 2 === 1 ? 1 : 0], etcdUrl, prefix);
          if (r.code !== 0) throw new Error(`services push of one change failed: ${r.stderr.trim()}`);
          const at = await servedByAll(port, k % 2 ? ip1 : ip0, 120_000);
          for (let i = 0; i < 100 && Number.isNaN(committedAt); i++) await sleep(10);
          commitToServed.push(at - committedAt);
          cliToServed.push(at - t0);
          // Let the old workers of the reload retire before the next change.
          await sleep(n >= 10_000 ? 1000 : 200);
        }
      } finally {
        await watcher.cancel();
      }
      const applies = controllers.flatMap((c, i) => c.lines.slice(from[i]).filter((l) => l.msg === "config applied"));
      const ms = (key: string) => median(applies.map((l) => Number((l["ms"] as Record<string, number>)[key])));
      rows.push({
        servers: n,
        push: pushRow,
        change: {
          commitToServed: summarize(commitToServed),
          cliToServed: summarize(cliToServed),
          apply: {
            render: ms("render"),
            test: ms("test"),
            reload: ms("reload"),
            total: ms("total"),
            n: applies.length,
          },
        },
        controllerRssMiB: await Promise.all(
          controllers.map(async (c) => round1((await memoryOf(c.child.pid ?? 0)).rss)),
        ),
      });
    } catch (e) {
      rows.push({
        servers: n,
        push: { ms: NaN, servedMs: NaN, writes: NaN, txns: NaN, etcd: { txn: NaN, range: NaN, proposals: NaN } },
        change: {
          commitToServed: summarize([]),
          cliToServed: summarize([]),
          apply: { render: NaN, test: NaN, reload: NaN, total: NaN, n: 0 },
        },
        controllerRssMiB: [],
        error: (e as Error).message,
      });
    } finally {
      client.close();
      await Promise.all(controllers.map((c) => c.stop()));
      await reg.close();
    }
  }
  return rows;
}
