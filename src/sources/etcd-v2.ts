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
import {
  RegistryState,
  retryOptions,
  tlsWhenReadable,
  type EtcdSourceOptions,
  type EtcdTlsOptions,
  type EtcdAuthOptions,
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
  ) {
    super(`etcd answered ${status}: ${body.message ?? "?"}${body.cause ? ` (${body.cause})` : ""}`);
  }
}

const ERROR_KEY_NOT_FOUND = 100;
const ERROR_UNAUTHORIZED = 110;
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
  const recovered = () => state.reachable({ waitIndex });
  const get = (query: string, timeoutMs?: number) => {
    const endpoint = options.etcdUrls[endpointIndex % options.etcdUrls.length] ?? "";
    return v2Request(new URL(`${dirPath}?${query}`, endpoint), { tls, auth: options.auth }, signal, timeoutMs);
  };

  while (!signal.aborted) {
    try {
      if (needList) {
        const { index, nodes } = await list(get);
        state.replace(nodes);
        waitIndex = index + 1;
        needList = false;
        log.debug({ index, keys: nodes.length }, "listed");
        recovered();
        state.publish(true, `etcd index ${index}`);
      }
      const r = await get(`wait=true&recursive=true&waitIndex=${waitIndex}`, WAIT_MAX_MS);
      if (r === "timeout") continue;
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
      const endpoint = options.etcdUrls[endpointIndex % options.etcdUrls.length] ?? "";
      state.unreachable(`${endpoint}: ${describeV2Error(e, options.auth)}`);
      endpointIndex++;
    }
    await retry.sleep(state.nextDelay(retry), signal);
  }
}

/** Lists the prefix recursively: every leaf key/value and the index to wait from. */
async function list(
  get: (query: string) => Promise<{ headers: IncomingHttpHeaders; body: V2Body } | "timeout">,
): Promise<{ index: number; nodes: [string, string][] }> {
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
    return { index: Number(r.headers["x-etcd-index"] ?? 0), nodes };
  } catch (e) {
    // No prefix directory yet: an empty registry, watched from etcd's current index.
    if (e instanceof EtcdV2Answer && e.body.errorCode === ERROR_KEY_NOT_FOUND)
      return { index: Number(e.body.index ?? 0), nodes: [] };
    throw e;
  }
}

/** Applies one v2 watch event to the key map; a deleted or expired directory takes every key under it along. */
function applyEvent(keys: Map<string, string>, base: string, body: V2Body): void {
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
  if (e instanceof EtcdV2Answer && (e.body.errorCode === ERROR_UNAUTHORIZED || e.status === 401))
    return auth
      ? `etcd rejected the credentials of user ${JSON.stringify(auth.username)} (check --etcd-username and the password)`
      : "etcd requires authentication: pass --etcd-username and the password";
  const err = e as NodeJS.ErrnoException;
  // node reports a connection cut mid-answer (etcd stopped during a long-poll wait) as a bare "aborted".
  if (err?.message === "aborted" || err?.code === "ECONNRESET") return "etcd closed the connection";
  return err instanceof Error ? err.message : String(e);
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
    let timer: NodeJS.Timeout | undefined;
    const req = request(url, { method: options.method ?? "GET", headers, signal, ...tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString();
        let body: V2Body = {};
        try {
          body = text.trim() === "" ? {} : (JSON.parse(text) as V2Body);
        } catch {
          return reject(new Error(`etcd answered ${res.statusCode} with a body that is not JSON`));
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve({ headers: res.headers, body });
        else reject(new EtcdV2Answer(status, body));
      });
    });
    req.on("socket", (s) => s.setKeepAlive(true, 10_000));
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (timeoutMs !== undefined)
      timer = setTimeout(() => {
        req.destroy();
        resolve("timeout");
      }, timeoutMs);
    req.end(form);
  });
}

/** The v2 API path of a key, each segment escaped. */
export function v2KeyPath(key: string): string {
  return `/v2/keys${key.split("/").map(encodeURIComponent).join("/")}`;
}
