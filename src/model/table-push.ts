import type { Route, Server } from "./services.js";
import { parseTableEntry, tableDir } from "./services-table.js";

/**
 * What `nginx-lb services push` writes to make the table in etcd equal a services file: the plan (keys to put and
 * delete, each with the revision it was read at, so a write guarded by it fails if another writer got there first),
 * the batches that fit etcd's request limits, and the diff as an operator reads it (never key material).
 */

/** A key as read from etcd before the push. */
export interface CurrentKey {
  readonly key: string;
  readonly value: string;
  readonly modRevision: number;
}

export type PushOp =
  /** `modRevision` 0: the key must still be absent. */
  | { readonly kind: "put"; readonly key: string; readonly value: string; readonly modRevision: number }
  | { readonly kind: "delete"; readonly key: string; readonly modRevision: number };

/** A key as the push read it, which the push must find there still (`modRevision` 0: still absent). */
export interface KeyAt {
  readonly key: string;
  readonly modRevision: number;
}

export interface PushPlan {
  readonly ops: readonly PushOp[];
  /** The keys read that stay as they are (no write): a concurrent delete of one must fail the push too. */
  readonly kept: readonly KeyAt[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
  readonly unchanged: number;
}

const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The writes that make `current` equal `desired` (key -> value). Deletions first, then changes, then additions: a
 * reader between batches then meets fewer transient conflicts (a new server taking a port an old one still holds).
 */
export function planPush(current: readonly CurrentKey[], desired: ReadonlyMap<string, string>): PushPlan {
  const now = new Map(current.map((c) => [c.key, c]));
  const added: string[] = [];
  const removed: string[] = [];
  const changed: string[] = [];
  const kept: KeyAt[] = [];
  for (const [key, value] of desired) {
    const c = now.get(key);
    if (!c) added.push(key);
    else if (c.value !== value) changed.push(key);
    else kept.push({ key, modRevision: c.modRevision });
  }
  kept.sort((a, b) => byKey(a.key, b.key));
  for (const c of current) if (!desired.has(c.key)) removed.push(c.key);
  for (const l of [added, removed, changed]) l.sort(byKey);
  const ops: PushOp[] = [
    ...removed.map((key): PushOp => ({ kind: "delete", key, modRevision: now.get(key)?.modRevision ?? 0 })),
    ...changed.map((key): PushOp => ({
      kind: "put",
      key,
      value: desired.get(key) ?? "",
      modRevision: now.get(key)?.modRevision ?? 0,
    })),
    ...added.map((key): PushOp => ({ kind: "put", key, value: desired.get(key) ?? "", modRevision: 0 })),
  ];
  return { ops, kept, added, removed, changed, unchanged: kept.length };
}

/** etcd's defaults: --max-txn-ops 128 (compares and operations each), --max-request-bytes 1.5 MiB. */
export const ETCD_LIMITS = { maxOps: 128, maxBytes: 1.5 * 1024 * 1024 } as const;

/**
 * Splits the writes into transactions within etcd's limits. Each transaction carries one compare per key it writes
 * plus one over the whole prefix, so it holds at most `maxOps - 1` writes; every key is written whole in one
 * transaction. `overheadBytes` per key covers the compare and the framing. One batch when everything fits.
 */
export function pushBatches(
  ops: readonly PushOp[],
  limits: { maxOps: number; maxBytes: number } = ETCD_LIMITS,
  overheadBytes = 64,
): PushOp[][] {
  const budget = limits.maxBytes - 4096;
  const out: PushOp[][] = [];
  let batch: PushOp[] = [];
  let bytes = 0;
  for (const op of ops) {
    // The key appears twice (compare and write).
    const size = 2 * Buffer.byteLength(op.key) + (op.kind === "put" ? Buffer.byteLength(op.value) : 0) + overheadBytes;
    if (batch.length > 0 && (batch.length + 1 > limits.maxOps - 1 || bytes + size > budget)) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(op);
    bytes += size;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}

/** One guarded transaction of a push. */
export interface PushTxn {
  readonly ops: readonly PushOp[];
  /** Keys it does not write but requires at their read revision: every kept key when they all fit, else none. */
  readonly held: readonly KeyAt[];
  /**
   * How many keys the prefix holds when it starts, if no one else deleted one (null: not checked). A compare can only
   * see keys that exist, so a concurrent delete of a key the push does not write leaves every compare true; the
   * transaction counts the prefix first, and a count below this says it happened.
   */
  readonly countBefore: number | null;
}

/**
 * The transactions of a push of `plan`, read when the prefix held `readCount` keys (null: no count check, for a
 * write of one server that a delete elsewhere cannot invalidate). A push that fits one transaction with a compare for
 * every kept key too is atomic against any concurrent writer: it fails with nothing written. A larger one cannot hold
 * them all (etcd counts compares against --max-txn-ops too): its count check finds a concurrent delete only once the
 * transaction that meets it has committed, so the push then stops and says what was written.
 */
export function pushTxns(
  plan: PushPlan,
  readCount: number | null,
  limits: { maxOps: number; maxBytes: number } = ETCD_LIMITS,
): PushTxn[] {
  const batches = pushBatches(plan.ops, limits);
  const heldBytes = plan.kept.reduce((n, k) => n + Buffer.byteLength(k.key) + 64, 0);
  const opBytes = plan.ops.reduce(
    (n, op) => n + 2 * Buffer.byteLength(op.key) + (op.kind === "put" ? Buffer.byteLength(op.value) : 0) + 64,
    0,
  );
  const holdAll =
    batches.length === 1 &&
    plan.ops.length + plan.kept.length <= limits.maxOps - 1 &&
    opBytes + heldBytes <= limits.maxBytes - 4096;
  let count = readCount;
  return batches.map((ops) => {
    const txn: PushTxn = { ops, held: holdAll ? plan.kept : [], countBefore: count };
    if (count !== null) for (const op of ops) count += op.kind === "delete" ? -1 : op.modRevision === 0 ? 1 : 0;
    return txn;
  });
}

/** `<prefix>/a.test:80` -> `a.test:80`. */
export function serverName(prefix: string, key: string): string {
  const dir = tableDir(prefix);
  return key.startsWith(dir) ? key.slice(dir.length) : key;
}

const backend = (r: Route) =>
  `${r.primary.app}-${r.primary.service}:${r.primary.port}${r.backendPath === "/" ? "" : r.backendPath}${r.backup ? ` (backup ${r.backup.app}-${r.backup.service}:${r.backup.port})` : ""}`;

/** What changed inside one server, in words; certificates and keys only as "changed". */
function serverChanges(a: Server, b: Server): string[] {
  const out: string[] = [];
  const before = new Map(a.routes.map((r) => [r.prefix, r]));
  const after = new Map(b.routes.map((r) => [r.prefix, r]));
  for (const [p, r] of after) {
    const o = before.get(p);
    if (!o) out.push(`route ${p} added -> ${backend(r)}`);
    else if (backend(o) !== backend(r)) out.push(`route ${p} changed: ${backend(o)} -> ${backend(r)}`);
  }
  for (const p of before.keys()) if (!after.has(p)) out.push(`route ${p} removed`);
  if (a.tls && !b.tls) out.push(`TLS removed (was port ${a.tls.port})`);
  else if (!a.tls && b.tls) out.push(`TLS added on port ${b.tls.port}`);
  else if (a.tls && b.tls) {
    if (a.tls.port !== b.tls.port) out.push(`ssl_port ${a.tls.port} -> ${b.tls.port}`);
    if (a.tls.certificate !== b.tls.certificate) out.push("TLS certificate changed");
    if (a.tls.key !== b.tls.key) out.push("TLS key changed");
  }
  return out;
}

/** One server's model from a stored value, shape-checked only (for the diff); null when it does not validate. */
function model(prefix: string, key: string, value: string): Server | null {
  const r = parseTableEntry(prefix, key, value);
  return r.ok ? r.server : null;
}

/** The diff of a plan, per server (never key material): what the CLI prints and the admin API answers. */
export interface PlanDiff {
  /** Each new server with its route prefixes (null when its value does not validate) and its TLS port if any. */
  readonly added: readonly {
    readonly server: string;
    readonly routes: readonly string[] | null;
    readonly tlsPort: number | null;
  }[];
  readonly removed: readonly { readonly server: string }[];
  /** Each changed server with what changed in it, in words. */
  readonly changed: readonly { readonly server: string; readonly changes: readonly string[] }[];
  readonly unchanged: number;
}

/** What a plan adds, removes and changes, server by server. */
export function planDiff(
  prefix: string,
  plan: PushPlan,
  current: readonly CurrentKey[],
  desired: ReadonlyMap<string, string>,
): PlanDiff {
  const now = new Map(current.map((c) => [c.key, c.value]));
  const added = plan.added.map((key) => {
    const s = model(prefix, key, desired.get(key) ?? "");
    return {
      server: serverName(prefix, key),
      routes: s ? s.routes.map((r) => r.prefix) : null,
      tlsPort: s?.tls?.port ?? null,
    };
  });
  const removed = plan.removed.map((key) => ({ server: serverName(prefix, key) }));
  const changed = plan.changed.map((key) => {
    const a = model(prefix, key, now.get(key) ?? "");
    const b = model(prefix, key, desired.get(key) ?? "");
    const changes =
      a === null
        ? ["replaces a value that did not validate"]
        : b === null
          ? ["new value"]
          : serverChanges(a, b).length > 0
            ? serverChanges(a, b)
            : ["same routes (the stored JSON differs: field order, defaults or unknown fields)"];
    return { server: serverName(prefix, key), changes };
  });
  return { added, removed, changed, unchanged: plan.unchanged };
}

/** A diff as lines: `+ a.test:80 (2 routes)`, `- b.test:80`, `~ c.test:80: route /api added ...`. */
export function diffLines(d: PlanDiff): string[] {
  return [
    ...d.added.map(
      (a) =>
        `+ ${a.server}${a.tlsPort !== null ? ` +tls:${a.tlsPort}` : ""} (routes ${a.routes ? a.routes.join(", ") : "?"})`,
    ),
    ...d.removed.map((r) => `- ${r.server}`),
    ...d.changed.map((c) => `~ ${c.server}: ${c.changes.join("; ")}`),
  ];
}

/** The diff of a plan as lines (see diffLines). */
export function describePlan(
  prefix: string,
  plan: PushPlan,
  current: readonly CurrentKey[],
  desired: ReadonlyMap<string, string>,
): string[] {
  return diffLines(planDiff(prefix, plan, current, desired));
}
