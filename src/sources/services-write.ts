/**
 * The write path of the routing table in etcd, shared by `nginx-lb services` and the admin server's
 * `/api/services`: read the table with the revision it was read at, turn a validated services.json into the keys it
 * makes, and apply a plan in transactions guarded by the revisions read, so a concurrent writer makes a write fail
 * instead of interleaving. Results are values; each caller words them for its user.
 */
import { CompareResult, CompareTarget, type Etcd3, type ICompare, type IRequestOp } from "etcd3";
import type { Problem } from "../model/problem.js";
import { parseServices, type Services, type TlsInspector } from "../model/services.js";
import { buildServicesTable, serverKey, tableDir, type RejectedKey, type TableEntry } from "../model/services-table.js";
import {
  planPush,
  type CurrentKey,
  type KeyAt,
  type PushOp,
  type PushPlan,
  type PushTxn,
} from "../model/table-push.js";
import { etcdFailure } from "./etcd-errors.js";
import { sourceClient } from "./etcd-v3.js";
import { checkEtcdOptions, etcdAuth, type EtcdOptions } from "./registry.js";

/** A key as read, with its create revision (the order in which conflicts between keys are resolved). */
export type ReadKey = CurrentKey & { readonly createRevision: number };

/** The table as etcd holds it, and the revision it was read at. */
export interface TableRead {
  readonly keys: readonly ReadKey[];
  readonly revision: number;
}

/** The table as etcd holds it now, and the revision it was read at. */
export async function readTable(client: Etcd3, prefix: string): Promise<TableRead> {
  const r = await client.getAll().prefix(tableDir(prefix)).exec();
  return {
    revision: Number(r.header.revision),
    keys: r.kvs.map((kv) => ({
      key: kv.key.toString(),
      value: kv.value.toString(),
      modRevision: Number(kv.mod_revision),
      createRevision: Number(kv.create_revision),
    })),
  };
}

/**
 * A validated services.json as key -> value: each server's object exactly as written (`raw` is the document that
 * validated as `services`, so it is an object with a list of server objects, in the same order).
 */
export function tableKeys(prefix: string, raw: unknown, services: Services): Map<string, string> {
  const servers = (raw as { servers?: Record<string, unknown>[] }).servers ?? [];
  const out = new Map<string, string>();
  servers.forEach((s, i) => {
    const model = services.servers[i];
    if (model) out.set(serverKey(prefix, model.domain, model.port), JSON.stringify(s));
  });
  return out;
}

/**
 * The table as a services.json document (servers in key order), which validates and pushes back unchanged. Keys
 * that do not validate (or lose a conflict) are left out and returned as `rejected`.
 */
export function tableDocument(
  prefix: string,
  read: TableRead,
  inspectTls?: TlsInspector,
): { readonly servers: Record<string, unknown>[]; readonly rejected: readonly RejectedKey[] } {
  const entries: TableEntry[] = read.keys.map((k) => ({
    key: k.key,
    value: k.value,
    createRevision: k.createRevision,
  }));
  const table = buildServicesTable(prefix, entries, new Map(), inspectTls ? { inspectTls } : {});
  const bad = new Set(table.rejected.map((r) => r.key));
  const servers = [...read.keys]
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .filter((k) => !bad.has(k.key))
    .map((k) => JSON.parse(k.value) as Record<string, unknown>);
  return { servers, rejected: table.rejected };
}

/** What `set` of one server would write: refused with the problems, or the key, its value and the plan. */
export type SetPlan =
  | { readonly ok: false; readonly problems: readonly Problem[]; readonly conflict: boolean }
  | {
      readonly ok: true;
      readonly key: string;
      readonly value: string;
      readonly plan: PushPlan;
      readonly current: readonly CurrentKey[];
      readonly desired: ReadonlyMap<string, string>;
    };

/**
 * One server (`raw`: its object as in services.json's servers), validated alone (TLS included when `inspectTls` is
 * given; paths inside the object) and against every other server in the table, as the daemon would resolve it (a new
 * key is the newest). `conflict` tells a refusal against the table from an invalid server.
 */
export function planSet(prefix: string, read: TableRead, raw: unknown, inspectTls?: TlsInspector): SetPlan {
  const alone = parseServices({ version: "0.1", servers: [raw] }, inspectTls ? { inspectTls } : {});
  const at = (p: Problem): Problem => ({ ...p, path: p.path.replace(/^servers\[0\]\.?/, "") || "(file)" });
  if (!alone.ok || !alone.value.servers[0])
    return { ok: false, problems: alone.ok ? [] : alone.errors.map(at), conflict: false };
  const model = alone.value.servers[0];
  const key = serverKey(prefix, model.domain, model.port);
  const value = JSON.stringify(raw);
  const existing = read.keys.find((k) => k.key === key);
  const entries: TableEntry[] = [
    ...read.keys.filter((k) => k.key !== key).map((k) => ({ ...k })),
    { key, value, createRevision: existing?.createRevision ?? read.revision + 1 },
  ];
  const refused = buildServicesTable(prefix, entries).rejected.find((r) => r.key === key);
  if (refused) return { ok: false, problems: refused.problems, conflict: true };
  const current = existing ? [existing] : [];
  const desired = new Map([[key, value]]);
  return { ok: true, key, value, plan: planPush(current, desired), current, desired };
}

const compare = (c: ICompare): ICompare => c;
/** No key under the prefix was written after `revision` (a concurrent push or set). */
const untouchedSince = (prefix: string, revision: number): ICompare =>
  compare({
    key: Buffer.from(tableDir(prefix)),
    range_end: prefixEnd(tableDir(prefix)),
    target: CompareTarget.Mod,
    result: CompareResult.Less,
    mod_revision: revision + 1,
  } as ICompare);

/** The end of the key range of a prefix: the prefix with its last byte incremented. */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  const last = b.length - 1;
  b[last] = (b[last] ?? 0) + 1;
  return b;
}

/** This key is still at the revision it was read at (0: still absent): catches a concurrent delete too. */
const unchangedKey = (k: KeyAt): ICompare =>
  compare({
    key: Buffer.from(k.key),
    target: CompareTarget.Mod,
    result: CompareResult.Equal,
    mod_revision: k.modRevision,
  });

const request = (op: PushOp): IRequestOp =>
  op.kind === "put"
    ? { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value) } }
    : { request_delete_range: { key: Buffer.from(op.key) } };

/** The keys under the prefix, counted in the transaction before its writes. */
const countKeys = (prefix: string): IRequestOp => ({
  request_range: { key: Buffer.from(tableDir(prefix)), range_end: prefixEnd(tableDir(prefix)), count_only: true },
});

/** How a guarded write ended. */
export type ApplyResult =
  | { readonly ok: true; readonly writes: number; readonly transactions: number; readonly revision: number }
  | {
      readonly ok: false;
      /**
       * "changed": a guard failed (a key written or held moved, or the prefix changed since `since`), and that
       * transaction wrote nothing; "deleted": a transaction committed, but counted fewer keys than this push leaves
       * (another writer deleted `deleted` servers that it keeps, which no compare can see).
       */
      readonly reason: "changed" | "deleted";
      readonly deleted: number;
      /** The revision the failed guard compared with, or the one the short-counted transaction committed at. */
      readonly since: number;
      /** Writes and transactions committed (they stay). */
      readonly done: number;
      readonly committed: number;
      readonly writes: number;
      readonly transactions: number;
    };

/**
 * Applies the writes in guarded transactions (src/model/table-push.ts's pushTxns): each requires that nothing under
 * the prefix changed since the previous one committed (the first: since the read) and that every key it writes (and,
 * when they fit, every key it keeps) is where it was read, and counts the prefix to find a concurrent delete no
 * compare can see. A failed guard stops the write: what is already committed stays, and the result says how much.
 * test/etcd/push-guard.test.ts pins each guard against a real concurrent writer.
 */
export async function applyOps(
  client: Etcd3,
  prefix: string,
  txns: readonly PushTxn[],
  readRevision: number,
): Promise<ApplyResult> {
  const writes = txns.reduce((n, t) => n + t.ops.length, 0);
  const transactions = txns.length;
  let since = readRevision;
  let done = 0;
  for (const [i, txn] of txns.entries()) {
    const r = await client.kv.txn({
      compare: [untouchedSince(prefix, since), ...txn.ops.map(unchangedKey), ...txn.held.map(unchangedKey)],
      success: [countKeys(prefix), ...txn.ops.map(request)],
      failure: [],
    });
    if (!r.succeeded)
      return { ok: false, reason: "changed", deleted: 0, since, done, committed: i, writes, transactions };
    done += txn.ops.length;
    since = Number(r.header.revision);
    const count = Number(r.responses[0]?.response_range.count ?? NaN);
    if (txn.countBefore !== null && count !== txn.countBefore)
      return {
        ok: false,
        reason: "deleted",
        deleted: txn.countBefore - count,
        since,
        done,
        committed: i + 1,
        writes,
        transactions,
      };
  }
  return { ok: true, writes, transactions, revision: since };
}

/** The words for an applied write or a conflict; `retry` says what to do about a conflict. */
export function applyMessage(prefix: string, r: ApplyResult, retry: string): string {
  if (r.ok)
    return `applied ${r.writes} write(s) in ${r.transactions} transaction(s); the table is at etcd revision ${r.revision}`;
  if (r.reason === "deleted")
    return (
      `conflict: another writer deleted ${r.deleted} server(s) under ${prefix} that this write keeps, before etcd ` +
      `revision ${r.since}: ${r.done} of ${r.writes} writes (${r.committed} of ${r.transactions} transactions) were ` +
      `applied, the rest were not, and the table does not equal what was written; ${retry}`
    );
  const applied =
    r.committed === 0
      ? "nothing was written"
      : `${r.done} of ${r.writes} writes (${r.committed} of ${r.transactions} transactions) were applied before it, the rest were not`;
  return `conflict: the table under ${prefix} changed after revision ${r.since} (another writer): ${applied}; ${retry}`;
}

/** Reads etcd's message for a revision it no longer keeps, or one it does not have yet. */
export function revisionProblem(e: unknown, revision: number): string | null {
  const message = (e as Error).message ?? "";
  if (/compacted/.test(message))
    return `revision ${revision} is compacted: etcd no longer keeps it (nginx-lb services history lists those it does)`;
  if (/future revision/.test(message)) return `revision ${revision} is newer than etcd's current revision`;
  return null;
}

/**
 * Whether the table changed after `revision` (a key under the prefix written or deleted since), given the table read
 * now: null when unchanged, else why. Every key now at or below `revision` means nothing was written since; then the
 * table had as many keys at `revision` unless one was deleted since.
 */
export async function changedSince(
  client: Etcd3,
  prefix: string,
  now: TableRead,
  revision: number,
): Promise<string | null> {
  const later = now.keys.find((k) => k.modRevision > revision);
  if (later) return `${later.key} was written at revision ${later.modRevision}, after revision ${revision}`;
  if (revision >= now.revision) return null;
  let then: number;
  try {
    then = await client.getAll().prefix(tableDir(prefix)).revision(revision).count();
  } catch (e) {
    const why = revisionProblem(e, revision);
    if (why === null) throw e;
    return why;
  }
  return then === now.keys.length
    ? null
    : `${then - now.keys.length} server(s) were deleted after revision ${revision}`;
}

/** `a.test:80` -> the domain and port, or null when it does not name a server that way. */
export function parseServerName(name: string): { readonly domain: string; readonly port: number } | null {
  const m = /^([^:/\s]+):(\d{1,5})$/.exec(name);
  const port = Number(m?.[2]);
  return m && port >= 1 && port <= 65535 ? { domain: m[1] ?? "", port } : null;
}

/** An etcd client for writing the table, for a long-running process (the admin server). */
export interface TableClient {
  readonly prefix: string;
  /** The client, made on first use (TLS files read then, and again after they failed); or why it cannot be. */
  client(): Promise<{ readonly ok: true; readonly client: Etcd3 } | { readonly ok: false; readonly why: string }>;
  /** Why an etcd call failed, in operator words (never the password). */
  describe(e: unknown): string;
  /** Closes the client and cancels its open calls. */
  close(): void;
}

/** A TableClient for the table under `etcd.prefix`, with the run's etcd endpoints, TLS files and credentials. */
export function tableClient(etcd: EtcdOptions): TableClient {
  const stop = new AbortController();
  const auth = etcdAuth(etcd);
  let made: Etcd3 | undefined;
  return {
    prefix: etcd.prefix,
    async client() {
      if (made) return { ok: true, client: made };
      const checked = await checkEtcdOptions(etcd);
      if (!checked.ok) return { ok: false, why: checked.errors.map((p) => `${p.path}: ${p.message}`).join("; ") };
      if (stop.signal.aborted) return { ok: false, why: "the controller is stopping" };
      made ??= sourceClient({ etcdUrls: etcd.etcdUrls, ...(auth ? { auth } : {}) }, checked.tls, stop.signal).client;
      return { ok: true, client: made };
    },
    describe: (e) => `etcd ${etcd.etcdUrls.join(", ")}: ${etcdFailure(e, auth)}`,
    close: () => stop.abort(),
  };
}
