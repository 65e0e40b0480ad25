/**
 * Endpoints from etcd's v3 API through the `etcd3` client: list the prefix, then watch from the list revision + 1.
 *
 * We do not rely on the client's own watch reconnection (etcd3 1.1.2, verified in test/etcd/etcd3-client.test.ts):
 * - on the watch-create response it moves its resume revision to that response's header revision + 1, before the
 *   catch-up events older than that revision have arrived; a stream that breaks in between resumes past them, and
 *   those events are lost;
 * - a compacted start revision surfaces as a bare `error` ("Watcher canceled: ", the compact revision dropped) and the
 *   watcher is gone for good, with no re-list.
 * So this source keeps its own revision (the mod_revision of the last event applied), cancels the client's watcher on
 * every disconnect, and re-creates it from that revision + 1 after its own backoff; an event of a revision an earlier
 * watch response already applied is skipped (never applied twice), and a cancelled watch means a fresh list.
 * A watch-create answer from another history (etcd restored from an older snapshot, or rebuilt: see `compareCluster`)
 * also means a fresh list: resuming there would wait for revisions that cluster never had.
 */
import { Etcd3, Range, type IOptions, type IResponseHeader, type IWatchResponse, type Watcher } from "etcd3";
import { keyPrefix } from "../model/backends.js";
import type { EndpointSource } from "./source.js";
import { etcdFailure, failedEndpoint } from "./etcd-errors.js";
import { RangeEtcd3 } from "./etcd-range-client.js";
import type { RangePage } from "./etcd-range-page.js";
import {
  advanceMark,
  compareCluster,
  RegistryState,
  retryOptions,
  tlsWhenReadable,
  type EtcdSourceOptions,
  type ClusterMark,
  type EtcdTlsOptions,
} from "./registry-state.js";

export type WatchEnd =
  | { kind: "aborted" }
  | { kind: "disconnected"; error: Error }
  | { kind: "cancelled"; error: Error }
  | { kind: "relist"; reason: string };

/** The etcd v3 endpoint source: whole backend sets, kept current from a watch, surviving etcd restarts. */
export function etcdV3Source(options: EtcdSourceOptions): EndpointSource {
  return {
    name: "etcd-v3",
    start: (signal, emit) => runV3(options, signal, emit),
  };
}

/** The etcd3 client options for these endpoints, TLS and credentials. */
export function etcd3ClientOptions(
  options: Pick<EtcdSourceOptions, "etcdUrls" | "auth"> & { tls?: EtcdTlsOptions | undefined },
): IOptions {
  const { tls, auth } = options;
  return {
    hosts: [...options.etcdUrls],
    dialTimeout: 3_000,
    // Without keepalive pings a watch over a silently dead connection (peer gone, no RST) would wait forever; etcd
    // accepts pings every 5 s or slower (--grpc-keepalive-min-time).
    // gRPC's default 4 MB receive limit fails the list of a large registry (100,000 keys is ~6 MB); etcd sends the
    // whole range in one message.
    grpcOptions: {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.max_receive_message_length": 256 << 20,
    },
    // Without a CA, https endpoints are checked against the system roots (the client's default).
    ...(tls?.ca || tls?.cert
      ? {
          credentials: {
            rootCertificate: tls.ca as Buffer,
            ...(tls.key ? { privateKey: tls.key } : {}),
            ...(tls.cert ? { certChain: tls.cert } : {}),
          },
        }
      : {}),
    ...(auth ? { auth: { username: auth.username, password: auth.password } } : {}),
  };
}

/**
 * Why an etcd call failed, in words an operator can act on (never including the password); for the one-shot
 * commands (register, deregister), which name the endpoints themselves.
 */
export function describeEtcdError(error: unknown, options: Pick<EtcdSourceOptions, "auth">): string {
  return `etcd ${etcdFailure(error, options.auth)}`;
}

/**
 * A pass-through in place of the client's fault handling: the source retries with its own backoff, so the client's
 * circuit breaker (after 3 failures it refuses calls for 5 s without trying, and reports "circuit breaker open"
 * instead of the real cause) and its 3 immediate retries would only delay recovery and blur the error.
 */
export const passThrough = {
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T) =>
    fn({ signal: new AbortController().signal }),
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
} as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * The client's own watch reconnect timer (an exponential backoff up to 30 s) is never cleared; this source cancels
 * its watchers on every disconnect and re-creates them itself, so a short constant delay lets that timer end soon
 * and never hold a stopping process.
 */
const shortWatchBackoff: { duration: number; next(): typeof shortWatchBackoff } = {
  duration: 50,
  next: () => shortWatchBackoff,
};

type CallOptions = Exclude<NonNullable<IOptions["defaultCallOptions"]>, (...args: never[]) => unknown>;
type Interceptor = NonNullable<CallOptions["interceptors"]>[number];
type Call = ReturnType<Parameters<Interceptor>[1]>;
type Listener = NonNullable<Parameters<Call["start"]>[1]>;

/**
 * Call options whose interceptor cancels every call still open when `signal` aborts. Closing the client does not end
 * calls already on a connection: a watch (or a list) on an etcd that accepts connections but never answers (frozen,
 * overloaded, a half-dead peer) would hold a stopping process until the keepalive gives up, 15 s later.
 */
function callsCancelledBy(signal: AbortSignal): CallOptions {
  const open = new Set<Call>();
  signal.addEventListener("abort", () => {
    for (const call of [...open]) call.cancelWithStatus(1 /* CANCELLED */, "nginx-lb is stopping");
    open.clear();
  });
  const interceptor = ((options, nextCall) => {
    const call = nextCall(options);
    const wrapped: Call = {
      cancelWithStatus: (status, details) => call.cancelWithStatus(status, details),
      getPeer: () => call.getPeer(),
      sendMessageWithContext: (context, message) => call.sendMessageWithContext(context, message),
      sendMessage: (message) => call.sendMessage(message),
      startRead: () => call.startRead(),
      halfClose: () => call.halfClose(),
      getAuthContext: () => call.getAuthContext(),
      start: (metadata, listener?: Partial<Listener>) => {
        if (signal.aborted) return call.cancelWithStatus(1, "nginx-lb is stopping");
        open.add(call);
        call.start(metadata, {
          onReceiveMetadata: (metadata) => listener?.onReceiveMetadata?.(metadata),
          onReceiveMessage: (message) => listener?.onReceiveMessage?.(message),
          onReceiveStatus: (status) => {
            open.delete(call);
            listener?.onReceiveStatus?.(status);
          },
        });
      },
    };
    return wrapped;
  }) as Interceptor;
  return { interceptors: [interceptor] };
}

/** The cluster, revision and raft term a response header reports. */
function markOf(header: IResponseHeader): ClusterMark {
  const id = header.cluster_id && header.cluster_id !== "0" ? BigInt(header.cluster_id).toString(16) : "";
  return { clusterId: id, revision: Number(header.revision), raftTerm: Number(header.raft_term) };
}

/**
 * The history a watcher follows: which cluster and how far. A list starts it afresh; every later header either
 * advances it or says why it is not the history followed (a restored or rebuilt etcd), and then a relist is due.
 */
export class ClusterFollower {
  private mark: ClusterMark | undefined;

  /** A list is the whole truth whatever came before; it only starts the history followed from here. */
  listed(header: IResponseHeader): void {
    this.mark = markOf(header);
  }

  /** Checks a watch header against the history followed; a reason to list afresh, or undefined. */
  check(header: IResponseHeader): string | undefined {
    const seen = markOf(header);
    const verdict = compareCluster(this.mark, seen);
    if (verdict.kind === "relist") {
      this.mark = seen;
      return verdict.reason;
    }
    this.mark = advanceMark(this.mark, seen);
    return undefined;
  }

  /** An event's header moves the history on (nothing to decide: events come from the cluster already checked). */
  advance(header: IResponseHeader): void {
    this.mark = advanceMark(this.mark, markOf(header));
  }
}

/**
 * A v3 client for a source: no library retries or circuit breakers (the source backs off itself), a short watch
 * reconnect delay, every call cancelled on stop, and closed at once on stop so no call waiting for a connection
 * holds the process.
 */
export function sourceClient(
  options: Pick<EtcdSourceOptions, "etcdUrls" | "auth">,
  tls: EtcdTlsOptions | undefined,
  signal: AbortSignal,
): { readonly client: RangeEtcd3; dispose(): void } {
  const client = new RangeEtcd3({
    ...etcd3ClientOptions({ ...options, tls }),
    faultHandling: { host: () => passThrough, global: passThrough, watchBackoff: shortWatchBackoff as never },
    defaultCallOptions: callsCancelledBy(signal),
  });
  const close = () => client.close();
  signal.addEventListener("abort", close, { once: true });
  return {
    client,
    dispose: () => {
      signal.removeEventListener("abort", close);
      client.close();
    },
  };
}

async function runV3(
  options: EtcdSourceOptions,
  signal: AbortSignal,
  emit: Parameters<EndpointSource["start"]>[1],
): Promise<void> {
  const log = options.logger.child({ source: "etcd-v3" });
  const base = keyPrefix(options.prefix);
  const retry = retryOptions(options.retry);
  const state = new RegistryState(options.prefix, emit, log, options.etcdUrls);
  const tls = await tlsWhenReadable(options.tls, state, retry, signal);
  if (signal.aborted) return;
  const { client, dispose } = sourceClient(options, tls, signal);
  let revision = 0;
  const cluster = new ClusterFollower();
  let needList = true;
  const recovered = () => state.reachable({ revision });

  try {
    while (!signal.aborted) {
      try {
        if (needList) {
          const header = await listInto(bytesPages(client), base, state);
          if (signal.aborted) break;
          revision = Number(header.revision);
          // A list is the whole truth whatever came before; it only starts the history followed from here.
          cluster.listed(header);
          needList = false;
          log.debug({ revision, keys: state.keys.size }, "listed");
          recovered();
          state.publish(true, `etcd revision ${revision}`);
        }
        log.debug({ fromRevision: revision + 1 }, "watching");
        const end = await watchFrom(client, base, revision, signal, {
          connected: (res) => {
            const relist = cluster.check(res.header);
            if (relist) return relist;
            recovered();
            state.publish(true, `etcd revision ${revision}`);
            return undefined;
          },
          data: (res) => {
            cluster.advance(res.header);
            // A transaction, a ranged delete or a lease expiry gives all its keys one revision, delivered together:
            // skip only revisions an earlier response applied, never the second key of the revision just applied.
            const applied = revision;
            let changed = false;
            for (const ev of res.events) {
              const mod = Number(ev.kv.mod_revision);
              if (mod <= applied) continue;
              const key = ev.kv.key.toString();
              if (ev.type === "Put") state.keys.set(key, ev.kv.value.toString());
              else state.keys.delete(key);
              revision = Math.max(revision, mod);
              changed = true;
            }
            if (changed) state.publish(true, `etcd revision ${revision}`);
          },
        });
        if (end.kind === "aborted") break;
        if (end.kind === "relist") {
          // No delay: the new cluster answered, and a list resets what a watch would otherwise wait for forever.
          log.warn(
            { etcdUrls: options.etcdUrls, revision, reason: end.reason },
            `etcd's ${end.reason}: listing afresh (endpoints deleted since are dropped, new ones added)`,
          );
          needList = true;
          continue;
        }
        if (end.kind === "cancelled") {
          // Almost always a compaction past our revision: the history we would resume from is gone.
          // The list comes after the usual short delay, so a watch etcd keeps cancelling cannot spin.
          log.warn({ revision, reason: end.error.message }, "etcd cancelled the watch (compacted?); listing afresh");
          needList = true;
        } else {
          const delay = state.nextDelay(retry);
          state.unreachable(failedEndpoint(end.error, options.etcdUrls), etcdFailure(end.error, options.auth), delay);
          await retry.sleep(delay, signal);
          continue;
        }
      } catch (e) {
        if (signal.aborted) break;
        const delay = state.nextDelay(retry);
        state.unreachable(failedEndpoint(e, options.etcdUrls), etcdFailure(e, options.auth), delay);
        await retry.sleep(delay, signal);
        continue;
      }
      await retry.sleep(state.nextDelay(retry), signal);
    }
  } finally {
    dispose();
  }
}

/** One page of a range: from `start` (inclusive) to `end`, at most `limit` keys, at `revision` when given. */
export interface PageRequest {
  readonly start: Buffer;
  readonly end: Buffer;
  readonly limit: number;
  readonly revision?: string;
}
export type PageReader = (request: PageRequest) => Promise<RangePage>;

const rangeRequest = (r: PageRequest) => ({
  key: r.start,
  range_end: r.end,
  limit: r.limit,
  ...(r.revision !== undefined ? { revision: r.revision } : {}),
});

/** Pages read from etcd's bytes (etcd-range-client.ts): what a source lists with. */
export const bytesPages =
  (client: RangeEtcd3): PageReader =>
  (request) =>
    client.rangePage(rangeRequest(request));

/** Pages through the client's own decoding: the reference the byte reader is tested against. */
export const clientPages =
  (client: Etcd3): PageReader =>
  async (request) => {
    const r = await client.kv.range(rangeRequest(request));
    return {
      header: r.header,
      keys: r.kvs.map((kv) => kv.key.toString()),
      values: r.kvs.map((kv) => kv.value.toString()),
      lastKey: r.kvs.at(-1)?.key,
      more: r.more,
    };
  };

/**
 * Lists `base` into the state and returns only the response's header. Its own function so that nothing keeps the
 * response alive: a local of the long-running source loop would hold its buffers until the next list.
 */
export async function listInto(
  read: PageReader,
  base: string,
  state: RegistryState,
  pageSize = LIST_PAGE,
): Promise<IResponseHeader> {
  // In pages read at the first page's revision (one consistent list), each indexed while etcd prepares the next
  // (asked for before this one is indexed): a whole response at 100,000 keys is two strings per key at once, and
  // etcd's time per page would otherwise add to ours. The keys go into a fresh map, taken only once every page came,
  // so a list that fails half-way leaves the last known keys.
  const { start, end } = Range.prefix(base);
  const keys = state.freshKeys();
  let header: IResponseHeader | undefined;
  let from = start;
  for (let next = read({ start, end, limit: pageSize }); ;) {
    const r = await next;
    header ??= r.header;
    const more = r.more && r.lastKey !== undefined;
    if (more && r.lastKey) {
      // A page ending before where it started would be asked for again and again.
      if (Buffer.compare(r.lastKey, from) < 0)
        throw new Error("etcd's range page ended before its start; listing again");
      // The smallest key after the last one, in bytes (a key need not be UTF-8).
      from = Buffer.concat([r.lastKey, Buffer.from([0])]);
      next = read({ start: from, end, limit: pageSize, revision: header.revision });
    }
    for (let i = 0; i < r.keys.length; i++) keys.set(r.keys[i] as string, r.values[i] as string);
    if (!more) break;
  }
  state.adopt(keys);
  return header;
}

/**
 * Keys per page of a list. etcd walks its whole index of the range for every page, whatever the limit (to count it:
 * etcd-io/etcd#16510), so each page costs etcd the whole list's index walk: fewer, larger pages list sooner. This
 * size lists 100,000 keys in two pages (bench/list-cost.ts compares page sizes) and keeps a page to a few megabytes.
 */
const LIST_PAGE = 50_000;

/**
 * Watches `base` from `revision + 1` until the stream breaks, etcd cancels the watch, the watch-create answer shows a
 * cluster other than the one followed (`connected` returns the reason), or the signal aborts.
 */
export function watchFrom(
  client: Etcd3,
  base: string,
  revision: number,
  signal: AbortSignal,
  on: { connected: (res: IWatchResponse) => string | undefined; data: (res: IWatchResponse) => void },
): Promise<WatchEnd> {
  return new Promise((resolve) => {
    let watcher: Watcher | undefined;
    const finish = (end: WatchEnd) => {
      signal.removeEventListener("abort", onAbort);
      const w = watcher;
      watcher = undefined;
      if (!w) return;
      w.removeAllListeners();
      // Detaching stops the client's own reconnect-and-resume for this watcher; we resume from our revision instead.
      w.cancel().catch(() => undefined);
      resolve(end);
    };
    const onAbort = () => finish({ kind: "aborted" });
    watcher = client
      .watch()
      .prefix(base)
      .startRevision(String(revision + 1))
      .watcher();
    watcher.on("connected", (res: IWatchResponse) => {
      const relist = on.connected(res);
      if (relist) finish({ kind: "relist", reason: relist });
    });
    watcher.on("data", (res: IWatchResponse) => on.data(res));
    watcher.on("disconnected", (error: Error) => finish({ kind: "disconnected", error }));
    watcher.on("error", (error: Error) => finish({ kind: "cancelled", error }));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}
