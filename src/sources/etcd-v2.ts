/**
 * Endpoints from etcd's v2 HTTP API, for registries written with `etcdctl set` (the original design).
 *
 * No maintained v2 client exists for Node (the v2 API is deprecated upstream and gone in etcd 3.6), so this speaks the
 * protocol directly: a recursive GET of the prefix, then `?wait=true&recursive=true&waitIndex=<X-Etcd-Index + 1>`,
 * resuming from the last index seen after a disconnect and listing afresh when etcd answers errorCode 401 ("the
 * event in requested index is outdated and cleared": it keeps only the last 1000 events). It uses node:http(s)
 * rather than `fetch`, because the built-in fetch cannot take a CA or a client certificate without the undici
 * package as a dependency.
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import { keyPrefix } from "../model/backends.js";
import type { EndpointSource } from "./source.js";
import { etcdFailure } from "./etcd-errors.js";
import {
  advanceMark,
  compareCluster,
  RegistryState,
  retryOptions,
  tlsWhenReadable,
  type EtcdSourceOptions,
  type EtcdTlsOptions,
  type EtcdAuthOptions,
  type ClusterMark,
  type RegistryKeys,
} from "./registry-state.js";

/** A v2 key node as etcd returns it. */
interface V2Node {
  readonly key?: string;
  readonly value?: string;
  readonly dir?: boolean;
  readonly nodes?: readonly V2Node[];
  readonly modifiedIndex?: number;
}

interface V2Body {
  readonly action?: string;
  readonly node?: V2Node;
  readonly errorCode?: number;
  readonly message?: string;
  readonly cause?: string;
  readonly index?: number;
}

/** An answer etcd gave (as opposed to no answer at all). */
export class EtcdV2Answer extends Error {
  constructor(
    readonly status: number,
    readonly body: V2Body,
    readonly headers: IncomingHttpHeaders = {},
  ) {
    super(`etcd answered ${status}: ${body.message ?? "?"}${body.cause ? ` (${body.cause})` : ""}`);
  }
}

const ERROR_KEY_NOT_FOUND = 100;
const ERROR_EVENT_INDEX_CLEARED = 401;
/** A wait with no event is re-issued from the same index after this long, so a silently dead peer is noticed. */
const WAIT_MAX_MS = 5 * 60_000;

/** The etcd v2 endpoint source: whole backend sets, kept current from a recursive long-poll wait. */
export function etcdV2Source(options: EtcdSourceOptions): EndpointSource {
  return { name: "etcd-v2", start: (signal, emit) => runV2(options, signal, emit) };
}

async function runV2(
  options: EtcdSourceOptions,
  signal: AbortSignal,
  emit: Parameters<EndpointSource["start"]>[1],
): Promise<void> {
  const log = options.logger.child({ source: "etcd-v2" });
  const base = keyPrefix(options.prefix);
  const dirPath = v2KeyPath(base.slice(0, -1));
  const retry = retryOptions(options.retry);
  const state = new RegistryState(options.prefix, emit, log, options.etcdUrls);
  const tls = await tlsWhenReadable(options.tls, state, retry, signal);
  let endpointIndex = 0;
  let waitIndex = 0;
  let needList = true;
  // After a disconnect the etcd answering may be another history (restored, rebuilt); a wait would not tell, as
  // etcd sends a wait's headers only with its event, and a restored etcd may never reach our index.
  let needProbe = false;
  let mark: ClusterMark | undefined;
  const recovered = () => state.reachable({ waitIndex });
  const endpoint = () => options.etcdUrls[endpointIndex % options.etcdUrls.length] ?? "";
  const get = (query: string, timeoutMs?: number) =>
    v2Request(new URL(`${dirPath}?${query}`, endpoint()), { tls, auth: options.auth }, signal, timeoutMs);
  /** Checks an answer's headers against the history followed; a reason to list afresh, or undefined. */
  const check = (headers: IncomingHttpHeaders, applied = 0): string | undefined => {
    const seen = v2Mark(headers, applied);
    const verdict = compareCluster(mark, seen);
    mark = verdict.kind === "relist" ? seen : advanceMark(mark, seen);
    return verdict.kind === "relist" ? verdict.reason : undefined;
  };
  const relist = (reason: string) => {
    log.warn(
      { endpoint: endpoint(), waitIndex, reason },
      `etcd's ${reason}: listing afresh (endpoints deleted since are dropped, new ones added)`,
    );
    needList = true;
  };

  while (!signal.aborted) {
    try {
      if (needList) {
        const { index, nodes, headers } = await list(get);
        state.replace(nodes);
        waitIndex = index + 1;
        // A list is the whole truth whatever came before; it only starts the history followed from here.
        mark = v2Mark(headers, index);
        needList = false;
        needProbe = false;
        log.debug({ index, keys: nodes.length }, "listed");
        recovered();
        state.publish(true, `etcd index ${index}`);
      }
      if (needProbe) {
        const reason = check(await probe(get));
        needProbe = false;
        if (reason) {
          relist(reason);
          continue;
        }
        recovered();
        state.publish(true, `etcd index ${waitIndex - 1}`);
      }
      const r = await get(`wait=true&recursive=true&waitIndex=${waitIndex}`, WAIT_MAX_MS);
      if (r === "timeout") {
        needProbe = true;
        continue;
      }
      const reason = check(r.headers, r.body.node?.modifiedIndex ?? 0);
      if (reason) {
        relist(reason);
        continue;
      }
      recovered();
      if (r.body.node === undefined) continue; // an empty answer: nothing happened, wait again from the same index
      applyEvent(state.keys, base, r.body);
      waitIndex = Math.max(waitIndex, (r.body.node.modifiedIndex ?? 0) + 1);
      state.publish(true, `etcd index ${waitIndex - 1}`);
      continue;
    } catch (e) {
      if (signal.aborted) break;
      if (e instanceof EtcdV2Answer && e.body.errorCode === ERROR_EVENT_INDEX_CLEARED) {
        log.warn({ waitIndex, reason: e.message }, "etcd no longer has the events since our index; listing afresh");
        needList = true;
        continue;
      }
      needProbe = true;
      const delay = state.nextDelay(retry);
      state.unreachable(endpoint(), etcdFailure(e, options.auth), delay);
      endpointIndex++;
      await retry.sleep(delay, signal);
    }
  }
}

/** The cluster, index and raft term a v2 answer's headers report (`applied`: an index known to exist there). */
function v2Mark(headers: IncomingHttpHeaders, applied = 0): ClusterMark {
  const one = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h) ?? "";
  return {
    clusterId: one(headers["x-etcd-cluster-id"]),
    revision: Math.max(Number(one(headers["x-etcd-index"])) || 0, applied),
    raftTerm: Number(one(headers["x-raft-term"])) || 0,
  };
}

/** The headers of a cheap answer (the prefix directory, not recursive; or its absence). */
async function probe(
  get: (query: string) => Promise<{ headers: IncomingHttpHeaders; body: V2Body } | "timeout">,
): Promise<IncomingHttpHeaders> {
  try {
    const r = await get("recursive=false&sorted=false");
    if (r === "timeout") throw new Error("timed out");
    return r.headers;
  } catch (e) {
    if (e instanceof EtcdV2Answer && e.body.errorCode === ERROR_KEY_NOT_FOUND) return e.headers;
    throw e;
  }
}

/** Lists the prefix recursively: every leaf key/value and the index to wait from. */
async function list(
  get: (query: string) => Promise<{ headers: IncomingHttpHeaders; body: V2Body } | "timeout">,
): Promise<{ index: number; nodes: [string, string][]; headers: IncomingHttpHeaders }> {
  try {
    const r = await get("recursive=true&sorted=false");
    if (r === "timeout") throw new Error("list timed out");
    const nodes: [string, string][] = [];
    const walk = (n: V2Node, depth: number) => {
      // Depth is bounded by the key layout; a deeper tree is not ours to read.
      if (depth > 16) return;
      if (!n.dir && n.key !== undefined) nodes.push([n.key, n.value ?? ""]);
      for (const c of n.nodes ?? []) walk(c, depth + 1);
    };
    if (r.body.node) walk(r.body.node, 0);
    return { index: Number(r.headers["x-etcd-index"] ?? 0), nodes, headers: r.headers };
  } catch (e) {
    // No prefix directory yet: an empty registry, watched from etcd's current index.
    if (e instanceof EtcdV2Answer && e.body.errorCode === ERROR_KEY_NOT_FOUND)
      return { index: Number(e.body.index ?? 0), nodes: [], headers: e.headers };
    throw e;
  }
}

/** Applies one v2 watch event to the key map; a deleted or expired directory takes every key under it along. */
function applyEvent(keys: RegistryKeys, base: string, body: V2Body): void {
  const node = body.node;
  if (!node?.key) return;
  const removed = ["delete", "compareAndDelete", "expire"].includes(body.action ?? "");
  if (node.dir) {
    if (!removed) return;
    const dir = `${node.key}/`;
    for (const k of [...keys.keys()]) if (k.startsWith(dir)) keys.delete(k);
    return;
  }
  if (!node.key.startsWith(base)) return;
  if (removed) keys.delete(node.key);
  else keys.set(node.key, node.value ?? "");
}

/** Says why a v2 request failed, in words an operator can act on (never including the password). */
export function describeV2Error(e: unknown, auth: EtcdAuthOptions | undefined): string {
  return `etcd ${etcdFailure(e, auth)}`;
}

/** One request to the v2 API; resolves with etcd's JSON answer, "timeout" after `timeoutMs`, or rejects. */
export function v2Request(
  url: URL,
  options: {
    tls: EtcdTlsOptions | undefined;
    auth: EtcdAuthOptions | undefined;
    method?: "GET" | "PUT" | "DELETE";
    form?: Record<string, string>;
  },
  signal: AbortSignal,
  timeoutMs?: number,
): Promise<{ headers: IncomingHttpHeaders; body: V2Body } | "timeout"> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: "application/json" };
    if (options.auth)
      headers["authorization"] =
        `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`).toString("base64")}`;
    const form = options.form ? new URLSearchParams(options.form).toString() : undefined;
    if (form !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
    const tls =
      url.protocol === "https:" ? { ca: options.tls?.ca, cert: options.tls?.cert, key: options.tls?.key } : {};
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    // Every way a request ends goes through `settle`, which clears the wait timer: a timer left behind (an answer cut
    // mid-body, an abort) would hold a stopping process for the whole wait.
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      f();
    };
    const req = request(url, { method: options.method ?? "GET", headers, signal, ...tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (e) => settle(() => reject(e)));
      res.on("close", () => settle(() => reject(new Error("aborted"))));
      res.on("end", () =>
        settle(() => {
          const text = Buffer.concat(chunks).toString();
          let body: V2Body = {};
          try {
            body = text.trim() === "" ? {} : (JSON.parse(text) as V2Body);
          } catch {
            return reject(new Error(`etcd answered ${res.statusCode} with a body that is not JSON`));
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve({ headers: res.headers, body });
          else reject(new EtcdV2Answer(status, body, res.headers));
        }),
      );
    });
    req.on("socket", (s) => s.setKeepAlive(true, 10_000));
    req.on("error", (e) => settle(() => reject(e)));
    req.on("close", () => settle(() => reject(new Error("aborted"))));
    if (timeoutMs !== undefined)
      timer = setTimeout(
        () =>
          settle(() => {
            req.destroy();
            resolve("timeout");
          }),
        timeoutMs,
      );
    req.end(form);
  });
}

/** The v2 API path of a key, each segment escaped. */
export function v2KeyPath(key: string): string {
  return `/v2/keys${key.split("/").map(encodeURIComponent).join("/")}`;
}
