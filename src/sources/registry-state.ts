import { readFile } from "node:fs/promises";
import { BackendIndex } from "../model/backend-index.js";
import type { BackendSet } from "../model/backends.js";
import { formatProblem, type Problem } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import type { Snapshot } from "./source.js";
import { outageLine } from "./etcd-errors.js";

/** TLS material for an etcd connection (file contents, not paths). */
export interface EtcdTlsOptions {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** Paths of the PEM files for an etcd connection; read when the source starts, so a file fixed on disk is picked up. */
export interface EtcdTlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** etcd user credentials; the password never reaches a log line. */
export interface EtcdAuthOptions {
  readonly username: string;
  readonly password: string;
}

/** How a registry source waits between attempts; tests replace `sleep` and `random` to control it. */
export interface RetryOptions {
  readonly baseMs: number;
  readonly maxMs: number;
  /** In [0, 1); the jitter. */
  readonly random: () => number;
  /** Resolves after `ms`, or early when `signal` aborts. */
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** Options every etcd endpoint source takes. */
export interface EtcdSourceOptions {
  readonly etcdUrls: readonly string[];
  readonly prefix: string;
  readonly tls?: EtcdTlsFiles;
  readonly auth?: EtcdAuthOptions;
  readonly logger: Logger;
  readonly retry?: Partial<RetryOptions>;
}

/** Reads the TLS files; each unreadable one is a problem naming its flag. No files: no TLS material. */
export async function readTlsFiles(
  files: EtcdTlsFiles | undefined,
): Promise<{ tls: EtcdTlsOptions | undefined; errors: Problem[] }> {
  const errors: Problem[] = [];
  const read = async (file: string | undefined, flag: string) => {
    if (!file) return undefined;
    try {
      return await readFile(file);
    } catch (e) {
      errors.push({ code: "etcd_tls", path: flag, message: `cannot read ${file}: ${(e as Error).message}` });
      return undefined;
    }
  };
  const [ca, cert, key] = await Promise.all([
    read(files?.caFile, "--etcd-cacert"),
    read(files?.certFile, "--etcd-cert"),
    read(files?.keyFile, "--etcd-key"),
  ]);
  if (files?.certFile && !files.keyFile)
    errors.push({ code: "etcd_tls", path: "--etcd-key", message: "--etcd-cert needs --etcd-key (the client key)" });
  if (!ca && !cert && !key) return { tls: undefined, errors };
  return { tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) }, errors };
}

/**
 * The TLS material for a source, retried with backoff while a file is unreadable (a daemon keeps serving its last
 * known endpoints rather than refusing to start over a certificate not mounted yet). Undefined also when aborted.
 */
export async function tlsWhenReadable(
  files: EtcdTlsFiles | undefined,
  state: RegistryState,
  retry: RetryOptions,
  signal: AbortSignal,
): Promise<EtcdTlsOptions | undefined> {
  while (!signal.aborted) {
    const { tls, errors } = await readTlsFiles(files);
    if (errors.length === 0) return tls;
    const delay = state.nextDelay(retry);
    state.unreachable(state.endpointList, `cannot be contacted yet: ${errors.map(formatProblem).join("; ")}`, delay);
    await retry.sleep(delay, signal);
  }
  return undefined;
}

/** Resolves after `ms` or as soon as the signal aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Settles when `signal` aborts, and at once when it already has: an abort listener added after the abort never fires,
 * so a stop that lands while a caller is still setting up would otherwise be waited for forever (pinned by
 * test/etcd/etcd-security.test.ts, "register and deregister", which sends SIGTERM as soon as the key is written).
 */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** Fills in the defaults: 200 ms doubling to 10 s, real time and randomness. */
export function retryOptions(partial: Partial<RetryOptions> = {}): RetryOptions {
  return { baseMs: 200, maxMs: 10_000, random: Math.random, sleep: abortableSleep, ...partial };
}

/**
 * Capped exponential backoff with "equal jitter": half the capped delay is fixed, half random, so a fleet of
 * controllers does not reconnect in lockstep after an etcd restart, yet no attempt comes immediately.
 */
export function backoffDelay(attempt: number, o: Pick<RetryOptions, "baseMs" | "maxMs" | "random">): number {
  const capped = Math.min(o.maxMs, o.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(capped / 2 + (capped / 2) * o.random());
}

/**
 * Where a registry's history stands, from etcd's response headers: the cluster's id, its revision (v2: X-Etcd-Index)
 * and raft term. Empty id or zero term: not known.
 */
export interface ClusterMark {
  readonly clusterId: string;
  readonly revision: number;
  readonly raftTerm: number;
}

export type ClusterVerdict = { readonly kind: "continue" } | { readonly kind: "relist"; readonly reason: string };

/**
 * Whether the etcd now answering is still the history this source follows. One restored from an older snapshot has
 * a lower revision (and a fresh raft term); one rebuilt elsewhere has another cluster id. A watch resumed on either
 * waits for revisions the new cluster never had: the deletions and writes in between would never arrive, so the
 * source must list afresh. (A member lagging behind another can also report a lower revision for a moment; the
 * relist that follows is merely redundant.)
 */
export function compareCluster(last: ClusterMark | undefined, seen: ClusterMark): ClusterVerdict {
  if (!last) return { kind: "continue" };
  if (last.clusterId !== "" && seen.clusterId !== "" && last.clusterId !== seen.clusterId)
    return {
      kind: "relist",
      reason: `cluster id changed from ${last.clusterId} to ${seen.clusterId} (etcd rebuilt or replaced)`,
    };
  if (seen.revision < last.revision)
    return {
      kind: "relist",
      reason: `revision went back from ${last.revision} to ${seen.revision} (etcd restored from an older snapshot or rebuilt)`,
    };
  if (last.raftTerm > 0 && seen.raftTerm > 0 && seen.raftTerm < last.raftTerm)
    return {
      kind: "relist",
      reason: `raft term went back from ${last.raftTerm} to ${seen.raftTerm} (etcd restored from a snapshot or rebuilt)`,
    };
  return { kind: "continue" };
}

/** The mark after a header that continues the history: never lower than what was seen before. */
export function advanceMark(last: ClusterMark | undefined, seen: ClusterMark): ClusterMark {
  if (!last) return seen;
  return {
    clusterId: seen.clusterId || last.clusterId,
    revision: Math.max(last.revision, seen.revision),
    raftTerm: Math.max(last.raftTerm, seen.raftTerm),
  };
}

/**
 * The registry as a key -> value map kept current from list + watch, and the one place that turns it into
 * snapshots: whole sets only, and nothing emitted unless the set, its warnings or the connected flag changed.
 */
export class RegistryState {
  private index: BackendIndex;
  private connected = false;
  private emitted = false;
  private outage: Set<string> | undefined;
  private attempt = 0;

  constructor(
    private readonly prefix: string,
    private readonly emit: (snapshot: Snapshot<BackendSet>) => void,
    private readonly log: Logger,
    private readonly etcdUrls: readonly string[],
  ) {
    this.index = new BackendIndex(prefix);
  }

  /** Where the sources write keys: straight into the parsed index, so a watch event costs one key's parse. */
  get keys(): RegistryKeys {
    return this.index;
  }

  /** etcd answered: ends an outage (logged once) and resets the backoff. */
  reachable(fields: Record<string, unknown>): void {
    if (this.outage !== undefined) this.log.info(fields, "etcd reachable again");
    this.outage = undefined;
    this.attempt = 0;
  }

  /**
   * etcd did not answer or refused us (`what` follows "etcd at URL", see etcd-errors.ts): each distinct failure is
   * logged once per outage (retries alternate between a few, e.g. a refused connection and an ended watch stream),
   * with the delay before the next attempt; the value stays the last known set.
   */
  unreachable(url: string, what: string, retryMs: number): void {
    if (this.outage === undefined) this.outage = new Set();
    const key = `${url} ${what}`;
    if (!this.outage.has(key))
      this.log.error({ etcdUrls: this.etcdUrls, retryInMs: retryMs }, outageLine(url, what, retryMs));
    this.outage.add(key);
    this.disconnected(`last known endpoints (etcd at ${url} ${what}; retrying)`);
  }

  /** The delay before the next attempt: capped exponential backoff with jitter. */
  nextDelay(retry: Pick<RetryOptions, "baseMs" | "maxMs" | "random">): number {
    return backoffDelay(this.attempt++, retry);
  }

  /** Replaces the whole map (after a list). */
  replace(entries: Iterable<readonly [string, string]>): void {
    this.keys.clear();
    for (const [k, v] of entries) this.keys.set(k, v);
  }

  /**
   * A new map, filled by a list page by page (each page indexed while etcd prepares the next) and taken with
   * `adopt` only once every page came: a list that fails half-way leaves the last known keys.
   */
  freshKeys(): BackendIndex {
    return new BackendIndex(this.prefix);
  }

  /** Replaces the whole map with one `freshKeys` gave and a list filled (as `replace` with its keys). */
  adopt(keys: BackendIndex): void {
    this.index = keys;
  }

  /** Emits the current set if anything a consumer can see changed since the last emission. */
  publish(connected: boolean, origin: string): void {
    if (this.emitted && connected === this.connected && !this.index.changed) return;
    this.connected = connected;
    this.emitted = true;
    const { set, warnings } = this.index.snapshot();
    this.emit({ value: set, warnings, connected, origin });
  }

  /**
   * Marks the source disconnected, keeping the last known set as the value. Before the first successful list there
   * is no known value, and an empty set would read as "every endpoint is gone": nothing is emitted then.
   */
  disconnected(origin: string): void {
    if (this.emitted) this.publish(false, origin);
  }

  /** The configured endpoints, for a failure that is about all of them. */
  get endpointList(): string {
    return this.etcdUrls.join(", ");
  }

  get isConnected(): boolean {
    return this.connected;
  }
}

/**
 * The registry's keys as the sources write them (list, watch events). Only the parsed index keeps them: a second map
 * of the raw values would be a second copy of the whole registry (100,000 keys at 10,000 routes).
 */
export interface RegistryKeys {
  set(key: string, value: string): void;
  delete(key: string): void;
  clear(): void;
  keys(): IterableIterator<string>;
  readonly size: number;
}
