/**
 * `nginx-lb services ...`: the one write path of the routing table in etcd. Every write is validated with the
 * daemon's own code first (TLS checks included) and guarded by the revisions it read, so a concurrent writer makes it
 * fail instead of interleaving. Exit codes: 0 done (diff: nothing differs), 1 refused (invalid input, a concurrent
 * writer, a missing key; diff: something differs), 2 usage or etcd unreachable.
 */
import { readFile } from "node:fs/promises";
import { Etcd3 } from "etcd3";
import { formatProblem, type Problem } from "../model/problem.js";
import { parseServices } from "../model/services.js";
import { buildServicesTable, serverKey, tableDir } from "../model/services-table.js";
import {
  describePlan,
  planPush,
  pushTxns,
  serverName,
  type CurrentKey,
  type PushPlan,
  type PushTxn,
} from "../model/table-push.js";
import { writeFileAtomic } from "../shared/files.js";
import { describeEtcdError, etcd3ClientOptions, passThrough } from "../sources/etcd-v3.js";
import { parseJsonText } from "../sources/read-json.js";
import { loadServicesFile } from "../sources/services-file.js";
import {
  applyMessage,
  applyOps,
  parseServerName,
  planSet,
  readTable,
  revisionProblem,
  tableDocument,
  tableKeys,
} from "../sources/services-write.js";
import { nodeTlsInspector } from "../tls/inspect.js";
import type { EtcdFlags } from "./etcd-options.js";
import { setupEtcd } from "./register.js";
import { exitCodeFor, printProblems } from "./report.js";

export interface ServicesFlags extends EtcdFlags {
  servicesEtcdPrefix?: string;
  dryRun?: boolean;
  out?: string;
}

export const DEFAULT_SERVICES_PREFIX = "/lb/services";

type Setup = Exclude<Awaited<ReturnType<typeof setupEtcd>>, number>;

/** Connects, runs `body`, closes; etcd failures are exit 2 with the reason (never the password). */
async function withEtcd(
  flags: ServicesFlags,
  body: (client: Etcd3, prefix: string, setup: Setup) => Promise<number>,
): Promise<number> {
  const setup = await setupEtcd(flags);
  if (typeof setup === "number") return setup;
  const prefix = flags.servicesEtcdPrefix ?? DEFAULT_SERVICES_PREFIX;
  const client = new Etcd3({
    ...etcd3ClientOptions(setup.connection),
    faultHandling: { host: () => passThrough, global: passThrough },
  });
  try {
    return await body(client, prefix, setup);
  } catch (e) {
    console.error(`error: etcd ${setup.config.etcdUrls.join(", ")}: ${describeEtcdError(e, setup.connection)}`);
    return 2;
  } finally {
    client.close();
  }
}

/** FILE validated as the daemon validates services.json, as key -> value (each server's object as written). */
async function desiredTable(file: string, prefix: string): Promise<Map<string, string> | number> {
  const checked = await loadServicesFile(file);
  printProblems(file, checked.ok ? [] : checked.errors, checked.warnings, "nothing was written to etcd");
  if (!checked.ok) return exitCodeFor(checked.errors);
  // Valid, so it is a JSON object with a servers list of objects; the raw objects are stored as written.
  const raw = parseJsonText(await readFile(file, "utf8"));
  return tableKeys(prefix, raw.ok ? raw.value : {}, checked.value);
}

function printDiff(
  prefix: string,
  plan: PushPlan,
  current: readonly CurrentKey[],
  desired: ReadonlyMap<string, string>,
): void {
  for (const line of describePlan(prefix, plan, current, desired)) console.log(line);
  console.error(
    `${plan.added.length} added, ${plan.removed.length} removed, ${plan.changed.length} changed, ${plan.unchanged} unchanged`,
  );
}

const RETRY = "run the command again to compare with the new table";

/** Applies the writes guarded (see applyOps) and says how it went: exit 0 applied, 1 a conflict. */
async function applyGuarded(client: Etcd3, prefix: string, txns: readonly PushTxn[], readRevision: number) {
  const r = await applyOps(client, prefix, txns, readRevision);
  console.error(r.ok ? applyMessage(prefix, r, RETRY) : `error: ${applyMessage(prefix, r, RETRY)}`);
  return r.ok ? 0 : 1;
}

/** `services push FILE [--dry-run]`: makes the table equal FILE. */
export async function servicesPushCommand(file: string, flags: ServicesFlags): Promise<number> {
  return withEtcd(flags, async (client, prefix) => {
    const desired = await desiredTable(file, prefix);
    if (typeof desired === "number") return desired;
    const current = await readTable(client, prefix);
    const plan = planPush(current.keys, desired);
    printDiff(prefix, plan, current.keys, desired);
    if (flags.dryRun) {
      console.error(`dry run: nothing written (etcd revision ${current.revision})`);
      return 0;
    }
    if (plan.ops.length === 0) {
      console.error(`the table under ${prefix} already equals ${file}: nothing written`);
      return 0;
    }
    return applyGuarded(client, prefix, pushTxns(plan, current.keys.length), current.revision);
  });
}

/** `services diff FILE`: exit 0 when etcd equals FILE, 1 when it differs. */
export async function servicesDiffCommand(file: string, flags: ServicesFlags): Promise<number> {
  return withEtcd(flags, async (client, prefix) => {
    const desired = await desiredTable(file, prefix);
    if (typeof desired === "number") return desired === 1 ? 2 : desired;
    const current = await readTable(client, prefix);
    const plan = planPush(current.keys, desired);
    printDiff(prefix, plan, current.keys, desired);
    return plan.ops.length === 0 ? 0 : 1;
  });
}

/**
 * `services get [--out FILE]`: the table as a services.json (servers in key order), which validates and pushes
 * back unchanged. Keys that do not validate are said on stderr (exit 1) and left out.
 */
export async function servicesGetCommand(flags: ServicesFlags): Promise<number> {
  return withEtcd(flags, async (client, prefix) => {
    const current = await readTable(client, prefix);
    const { servers, rejected } = tableDocument(prefix, current, nodeTlsInspector);
    for (const r of rejected) for (const p of r.problems) console.error(`error: ${formatProblem(p)} (left out)`);
    const text = `${JSON.stringify({ version: "0.1", servers }, null, 2)}\n`;
    // Values hold TLS keys: the file is the operator's alone.
    if (flags.out !== undefined) await writeFileAtomic(flags.out, text, 0o600);
    else process.stdout.write(text);
    console.error(`${servers.length} server(s) from ${prefix} at etcd revision ${current.revision}`);
    return rejected.length > 0 ? 1 : 0;
  });
}

/**
 * `services set SERVER.json`: puts one server (its object as in services.json's servers), validated alone and
 * against every other server in the table, guarded so a concurrent writer makes it fail.
 */
export async function servicesSetCommand(file: string, flags: ServicesFlags): Promise<number> {
  let raw: unknown;
  try {
    const parsed = parseJsonText(await readFile(file, "utf8"));
    if (!parsed.ok) {
      printProblems(file, parsed.errors, parsed.warnings, "nothing was written to etcd");
      return 1;
    }
    raw = parsed.value;
  } catch (e) {
    console.error(`error: ${file}: ${(e as Error).message}`);
    return 2;
  }
  const alone = parseServices({ version: "0.1", servers: [raw] }, { inspectTls: nodeTlsInspector });
  const at = (p: Problem): Problem => ({ ...p, path: p.path.replace(/^servers\[0\]\.?/, "") || "(file)" });
  printProblems(file, alone.ok ? [] : alone.errors.map(at), alone.warnings.map(at), "nothing was written to etcd");
  if (!alone.ok || !alone.value.servers[0]) return 1;
  return withEtcd(flags, async (client, prefix) => {
    const current = await readTable(client, prefix);
    // The new server against the others: as the daemon would resolve it (a new key is the newest).
    const set = planSet(prefix, current, raw);
    if (!set.ok) {
      for (const p of set.problems) console.error(`error: ${formatProblem(p)}`);
      console.error(`${file}: conflicts with the table under ${prefix}; nothing was written to etcd`);
      return 1;
    }
    printDiff(prefix, set.plan, set.current, set.desired);
    if (set.plan.ops.length === 0) {
      console.error(`${serverName(prefix, set.key)} already holds this server: nothing written`);
      return 0;
    }
    return applyGuarded(client, prefix, pushTxns(set.plan, null), current.revision);
  });
}

/** `services delete DOMAIN:PORT`: deletes one server's key; exit 1 when there is none. */
export async function servicesDeleteCommand(name: string, flags: ServicesFlags): Promise<number> {
  const m = parseServerName(name);
  if (!m) {
    console.error(
      `error: ${JSON.stringify(name)}: name the server as DOMAIN:PORT (its frontend_port), e.g. a.example.com:80`,
    );
    return 2;
  }
  return withEtcd(flags, async (client, prefix) => {
    const key = serverKey(prefix, m.domain, m.port);
    const r = await client.delete().key(key).exec();
    if (Number(r.deleted) === 0) {
      console.error(`error: no server ${name} under ${prefix} (nginx-lb services get lists them)`);
      return 1;
    }
    console.error(`deleted ${key} (etcd revision ${r.header.revision})`);
    return 0;
  });
}

/**
 * `services rollback --revision N [--dry-run]`: makes the table what it was at revision N, as a push of that table:
 * validated as a whole (TLS included) first, then written guarded.
 */
export async function servicesRollbackCommand(flags: ServicesFlags & { revision?: string }): Promise<number> {
  const revision = Number(flags.revision);
  if (!Number.isSafeInteger(revision) || revision < 1) {
    console.error(`error: --revision: ${JSON.stringify(flags.revision)} is not a revision (a positive integer)`);
    return 2;
  }
  return withEtcd(flags, async (client, prefix) => {
    let old;
    try {
      old = await client.getAll().prefix(tableDir(prefix)).revision(revision).exec();
    } catch (e) {
      const why = revisionProblem(e, revision);
      if (why === null) throw e;
      console.error(`error: ${why}`);
      return 1;
    }
    const desired = new Map(old.kvs.map((kv) => [kv.key.toString(), kv.value.toString()] as const));
    // The old table as a services.json: every key must validate and the whole must, as for a push.
    const problems: Problem[] = [];
    const servers: unknown[] = [];
    for (const [key, value] of desired) {
      const r = buildServicesTable(prefix, [{ key, value, createRevision: 0 }]);
      problems.push(...r.rejected.flatMap((x) => x.problems));
      if (r.rejected.length === 0) servers.push(JSON.parse(value));
    }
    const whole = parseServices({ version: "0.1", servers }, { inspectTls: nodeTlsInspector });
    if (!whole.ok) problems.push(...whole.errors);
    if (problems.length > 0) {
      for (const p of problems) console.error(`error: ${formatProblem(p)}`);
      console.error(`the table at revision ${revision} is not valid now: nothing was written to etcd`);
      return 1;
    }
    const current = await readTable(client, prefix);
    const plan = planPush(current.keys, desired);
    printDiff(prefix, plan, current.keys, desired);
    if (flags.dryRun) {
      console.error(`dry run: nothing written (etcd revision ${current.revision})`);
      return 0;
    }
    if (plan.ops.length === 0) {
      console.error(`the table under ${prefix} already equals the one at revision ${revision}: nothing written`);
      return 0;
    }
    return applyGuarded(client, prefix, pushTxns(plan, current.keys.length), current.revision);
  });
}

/** The oldest revision etcd still keeps: ranges below its compaction fail (a binary search, ~log2(revision) reads). */
async function oldestRevision(client: Etcd3, key: string, current: number): Promise<number> {
  let lo = 1;
  let hi = current;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    try {
      await client.get(key).revision(mid).exec();
      hi = mid;
    } catch (e) {
      if (revisionProblem(e, mid) === null) throw e;
      lo = mid + 1;
    }
  }
  return lo;
}

/**
 * `services history`: every revision etcd still keeps at which the table changed, with the servers put or deleted.
 * Read with a watch from the oldest kept revision: etcd sends the past events at once after the watch is created, so
 * the read ends after a quiet second (bounded to 30 s).
 */
export async function servicesHistoryCommand(flags: ServicesFlags): Promise<number> {
  return withEtcd(flags, async (client, prefix) => {
    const dir = tableDir(prefix);
    const now = await readTable(client, prefix);
    const from = await oldestRevision(client, dir, now.revision);
    const changes = new Map<number, string[]>();
    await new Promise<void>((resolve, reject) => {
      let quiet: NodeJS.Timeout | undefined;
      const deadline = setTimeout(() => done(), 30_000);
      let watcher: Awaited<ReturnType<ReturnType<Etcd3["watch"]>["watcher"]>> | undefined;
      const done = (error?: Error) => {
        clearTimeout(quiet);
        clearTimeout(deadline);
        void watcher?.cancel().catch(() => undefined);
        if (error) reject(error);
        else resolve();
      };
      const idle = () => {
        clearTimeout(quiet);
        quiet = setTimeout(() => done(), 1000);
      };
      void client
        .watch()
        .prefix(dir)
        .startRevision(String(from))
        .create()
        .then((w) => {
          watcher = w;
          w.on("data", (res) => {
            for (const ev of res.events) {
              const rev = Number(ev.kv.mod_revision);
              const name = serverName(prefix, ev.kv.key.toString());
              const list = changes.get(rev) ?? [];
              list.push(ev.type === "Put" ? (Number(ev.kv.version) === 1 ? `+${name}` : `~${name}`) : `-${name}`);
              changes.set(rev, list);
            }
            idle();
          });
          w.on("error", (e: Error) => done(e));
          idle();
        }, done);
    });
    for (const [rev, list] of [...changes.entries()].sort(([a], [b]) => a - b))
      console.log(`${rev}  ${list.join(" ")}`);
    console.error(
      `${changes.size} change(s) under ${prefix} since revision ${from} (older ones compacted); ` +
        `the table is at etcd revision ${now.revision}. nginx-lb services rollback --revision N restores one`,
    );
    return 0;
  });
}
