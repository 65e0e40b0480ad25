/**
 * The routing table from etcd (`run --services-etcd-prefix`): one key per server under the prefix, listed, then
 * watched from the list revision + 1, listed afresh after a compaction or when another history answers (see
 * `compareCluster`), exactly as the v3 endpoint source follows the registry (its watch helper is shared).
 *
 * Each key is validated on its own (`buildServicesTable`): a bad key is reported and its server keeps its last valid
 * version, every other server applies. The keys and their revision are saved in the state dir after every change, so
 * a controller that starts while etcd is down serves the last known table.
 */
import type { Problem } from "../model/problem.js";
import type { Services, TlsInspector } from "../model/services.js";
import {
  buildServicesTable,
  tableDir,
  type RejectedKey,
  type TableEntry,
  type ValidServer,
} from "../model/services-table.js";
import { shareServers } from "../model/share-servers.js";
import type { Logger } from "../shared/log.js";
import type { TableStore } from "../state/store.js";
import { etcdFailure } from "./etcd-errors.js";
import { ClusterFollower, sourceClient, watchFrom } from "./etcd-v3.js";
import { backoffDelay, readTlsFiles, retryOptions, type EtcdSourceOptions } from "./registry-state.js";
import type { ServicesSource, Snapshot } from "./source.js";

/** Where the routes in force came from, and the keys refused: for the status API. */
export interface RoutesReport {
  readonly prefix: string;
  /** The etcd revision the table reflects (0 before the first answer without a saved table). */
  readonly revision: number;
  readonly connected: boolean;
  readonly origin: string;
  readonly keys: number;
  readonly rejected: readonly RejectedKey[];
}

export interface EtcdServicesOptions extends EtcdSourceOptions {
  readonly store: TableStore;
  readonly inspectTls?: TlsInspector;
  readonly report: (report: RoutesReport) => void;
}

export class EtcdServicesSource implements ServicesSource {
  readonly name = "services-etcd";
  private readonly entries = new Map<string, TableEntry>();
  private valid: ReadonlyMap<string, ValidServer> = new Map();
  private revision = 0;
  private connected = false;
  /** The table last published. */
  private last: Services | null = null;
  /** A save is queued behind the one running: it takes the entries as they are when it starts. */
  private saveQueued = false;
  private emitted = false;
  private rejectedDigest = "";
  private saving: Promise<void> = Promise.resolve();
  private savedRevision = -1;
  private readonly log: Logger;

  constructor(private readonly options: EtcdServicesOptions) {
    this.log = options.logger.child({ source: "services-etcd", prefix: options.prefix });
  }

  async start(
    signal: AbortSignal,
    emit: (s: Snapshot<Services>) => void,
    _reject?: (errors: readonly Problem[], warnings: readonly Problem[]) => void,
  ): Promise<void> {
    const { options, log } = this;
    const base = tableDir(options.prefix);
    const retry = retryOptions(options.retry);
    let attempt = 0;
    let outage: Set<string> | undefined;
    const saved = await options.store.load(options.prefix);
    if (saved.error !== undefined)
      log.error({ file: options.store.file, error: saved.error }, "the saved routing table is unusable: ignored");
    /** etcd did not answer: the last known table (saved, before the first list) serves; each cause logged once. */
    const failed = async (what: string) => {
      const delay = backoffDelay(attempt++, retry);
      outage ??= new Set();
      if (!outage.has(what))
        log.error(
          { etcdUrls: options.etcdUrls, retryInMs: delay },
          `etcd ${what}: the last known routes keep serving; retrying`,
        );
      outage.add(what);
      if (!this.emitted && saved.table) {
        for (const e of saved.table.entries) this.entries.set(e.key, e);
        this.revision = saved.table.revision;
        this.publish(emit, false, `state dir (etcd revision ${this.revision}; etcd unreachable)`);
      } else if (!this.emitted)
        // No known table: an empty one would read as "every server is gone"; the routes in state.json keep serving.
        options.report({
          prefix: options.prefix,
          revision: 0,
          connected: false,
          origin: "not yet read (etcd unreachable)",
          keys: 0,
          rejected: [],
        });
      else if (this.connected)
        this.publish(emit, false, `last known, etcd revision ${this.revision} (etcd unreachable)`);
      await retry.sleep(delay, signal);
    };
    const reachable = () => {
      if (outage !== undefined) log.info({ revision: this.revision }, "etcd reachable again");
      outage = undefined;
      attempt = 0;
    };

    let tls;
    for (;;) {
      if (signal.aborted) return;
      const r = await readTlsFiles(options.tls);
      if (r.errors.length === 0) {
        tls = r.tls;
        break;
      }
      await failed(`cannot be contacted yet: ${r.errors.map((p) => `${p.path}: ${p.message}`).join("; ")}`);
    }
    const { client, dispose } = sourceClient(options, tls, signal);
    const cluster = new ClusterFollower();
    let needList = true;
    try {
      while (!signal.aborted) {
        try {
          if (needList) {
            const r = await client.getAll().prefix(base).exec();
            if (signal.aborted) break;
            this.entries.clear();
            for (const kv of r.kvs) {
              const key = kv.key.toString();
              this.entries.set(key, { key, value: kv.value.toString(), createRevision: Number(kv.create_revision) });
            }
            this.revision = Number(r.header.revision);
            cluster.listed(r.header);
            needList = false;
            reachable();
            this.publish(emit, true, `etcd revision ${this.revision}`);
          }
          const end = await watchFrom(client, base, this.revision, signal, {
            connected: (res) => {
              const relist = cluster.check(res.header);
              if (relist) return relist;
              reachable();
              if (!this.connected) this.publish(emit, true, `etcd revision ${this.revision}`);
              return undefined;
            },
            data: (res) => {
              cluster.advance(res.header);
              // One transaction's keys share a revision and arrive together: skip only revisions already applied.
              const applied = this.revision;
              let changed = false;
              for (const ev of res.events) {
                const mod = Number(ev.kv.mod_revision);
                if (mod <= applied) continue;
                const key = ev.kv.key.toString();
                if (ev.type === "Put")
                  this.entries.set(key, {
                    key,
                    value: ev.kv.value.toString(),
                    createRevision: Number(ev.kv.create_revision),
                  });
                else this.entries.delete(key);
                this.revision = Math.max(this.revision, mod);
                changed = true;
              }
              if (changed) this.publish(emit, true, `etcd revision ${this.revision}`);
            },
          });
          if (end.kind === "aborted") break;
          if (end.kind === "relist") {
            log.warn(
              { revision: this.revision, reason: end.reason },
              `etcd's ${end.reason}: listing the routes afresh`,
            );
            needList = true;
            continue;
          }
          if (end.kind === "cancelled") {
            log.warn(
              { revision: this.revision, reason: end.error.message },
              "etcd cancelled the routes watch (compacted?); listing afresh",
            );
            needList = true;
            await retry.sleep(backoffDelay(attempt++, retry), signal);
          } else await failed(etcdFailure(end.error, options.auth));
        } catch (e) {
          if (signal.aborted) break;
          await failed(etcdFailure(e, options.auth));
        }
      }
    } finally {
      dispose();
      await this.saving;
    }
  }

  /** Rebuilds the table; emits it when the servers (or the connected flag) changed, reports and saves it always. */
  private publish(emit: (s: Snapshot<Services>) => void, connected: boolean, origin: string): void {
    const { options, log } = this;
    const table = buildServicesTable(
      options.prefix,
      [...this.entries.values()],
      this.valid,
      options.inspectTls ? { inspectTls: options.inspectTls } : {},
    );
    this.valid = table.valid;
    // Unchanged keys keep their server objects (buildServicesTable reuses them), so this compares a change's servers
    // only; equal content read again (a relist) is the previous table itself.
    const services = shareServers(this.last, table.services);
    const rejectedDigest = JSON.stringify(table.rejected);
    if (rejectedDigest !== this.rejectedDigest)
      for (const r of table.rejected)
        log.error(
          { key: r.key, problems: r.problems.map((p) => `${p.path}: ${p.message}`), keptLastValid: r.keptLastValid },
          `routing key ${r.key} is rejected: ${r.keptLastValid ? "its last valid version stays in force" : "its server is absent"}; fix the key (nginx-lb services set) or delete it`,
        );
    this.rejectedDigest = rejectedDigest;
    options.report({
      prefix: options.prefix,
      revision: this.revision,
      connected,
      origin,
      keys: this.entries.size,
      rejected: table.rejected,
    });
    if (!this.emitted || services !== this.last || connected !== this.connected)
      emit({ value: services, warnings: table.warnings, connected, origin });
    this.emitted = true;
    this.last = services;
    this.connected = connected;
    if (connected && this.revision !== this.savedRevision) this.save();
  }

  /**
   * Saves the keys and revision; writes are serialised and coalesced (changes while one is written are saved together
   * by the next: the whole table is written each time), a failure is logged and the next change tries again.
   */
  private save(): void {
    this.savedRevision = this.revision;
    if (this.saveQueued) return;
    this.saveQueued = true;
    this.saving = this.saving
      .then(() => {
        this.saveQueued = false;
        return this.options.store.save({
          version: 1 as const,
          prefix: this.options.prefix,
          revision: this.revision,
          entries: [...this.entries.values()],
          savedAt: new Date().toISOString(),
        });
      })
      .catch((e: unknown) =>
        this.log.error(
          { file: this.options.store.file, err: (e as Error).message },
          "could not save the routing table: a restart while etcd is down would serve an older one; check the state dir",
        ),
      );
  }
}
