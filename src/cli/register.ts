import { Etcd3, type Lease, type Watcher } from "etcd3";
import { keyPrefix, parseEndpointKey, parseWeight } from "../model/backends.js";
import { formatProblem, type Problem } from "../model/problem.js";
import { createLogger, type Logger } from "../shared/log.js";
import { etcd3ClientOptions, describeEtcdError } from "../sources/etcd-v3.js";
import {
  abortableSleep,
  backoffDelay,
  retryOptions,
  untilAborted,
  type EtcdAuthOptions,
  type EtcdTlsOptions,
} from "../sources/registry-state.js";
import { EtcdV2Answer, describeV2Error, v2KeyPath, v2Request } from "../sources/etcd-v2.js";
import { checkEtcdOptions, etcdAuth, type EtcdOptions } from "../sources/registry.js";
import { etcdConfigFromFlags, type EtcdFlags } from "./etcd-options.js";

export interface RegisterFlags extends EtcdFlags {
  app: string;
  service: string;
  ip: string;
  weight?: string;
  ttl?: string;
}

/** A validated registration: the exact key and value the daemon will read back as one endpoint. */
export interface Registration {
  readonly key: string;
  readonly value: string;
  readonly ttl: number;
}

/**
 * Builds the key and value for `app`/`service`/`ip` and checks them with the rules the daemon reads with
 * (parseEndpointKey), so nothing is written that would be rejected or read with a different weight.
 */
export function registrationFor(
  prefix: string,
  flags: Pick<RegisterFlags, "app" | "service" | "ip" | "weight" | "ttl">,
): { ok: true; value: Registration } | { ok: false; errors: Problem[] } {
  const errors: Problem[] = [];
  const weight = Number(flags.weight ?? "50");
  const value = JSON.stringify({ weight });
  const w = parseWeight(value);
  if (w.warning || !/^\d+$/.test(flags.weight ?? "50"))
    errors.push({ code: "register_weight", path: "--weight", message: `must be an integer from 0 to 1000` });
  const ttl = Number(flags.ttl ?? "30");
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 86_400)
    errors.push({ code: "register_ttl", path: "--ttl", message: "must be whole seconds from 2 to 86400" });
  for (const [flag, v] of [
    ["--app", flags.app],
    ["--service", flags.service],
  ] as const)
    if (!v || v.includes("/")) errors.push({ code: "register_name", path: flag, message: "must be a non-empty name" });
  const key = `${keyPrefix(prefix)}${flags.app}-${flags.service}/ips/${flags.ip}`;
  const r = parseEndpointKey(key, value, prefix);
  if (r.kind === "rejected") errors.push({ code: "register_key", path: key, message: r.reason });
  if (errors.length > 0) return { ok: false, errors };
  // The daemon lowercases IPv6 addresses; write the form it reads so deregister finds the same key.
  const canonical = r.kind === "endpoint" ? `${keyPrefix(prefix)}${r.name}/ips/${r.ip}` : key;
  return { ok: true, value: { key: canonical, value, ttl } };
}

/**
 * `nginx-lb register`: writes the endpoint on a lease, renews it while running, puts it back when someone else deletes
 * it, deletes it on SIGTERM/SIGINT.
 */
export async function registerCommand(flags: RegisterFlags): Promise<number> {
  const setup = await setupEtcd(flags);
  if (typeof setup === "number") return setup;
  const reg = registrationFor(setup.config.prefix, flags);
  if (!reg.ok) return fail(reg.errors);
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  try {
    await (setup.config.api === "v2" ? holdV2 : holdV3)(setup.connection, reg.value, ac.signal, setup.logger);
  } finally {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
  }
  return 0;
}

/** What register/deregister connect with: endpoints, credentials and the TLS material already read. */
export interface Connection {
  readonly etcdUrls: readonly string[];
  readonly auth?: EtcdAuthOptions;
  readonly tls?: EtcdTlsOptions;
}

/**
 * Reads the etcd flags; prints the problems and returns the exit code when they are wrong: 2 without an endpoint (a
 * registration written to whatever etcd listens on localhost would be silently lost to the daemons), else 1.
 */
export async function setupEtcd(
  flags: EtcdFlags,
): Promise<{ config: EtcdOptions; connection: Connection; logger: Logger } | number> {
  const c = await etcdConfigFromFlags(flags, process.env);
  if (!c.ok) return fail(c.errors);
  if (c.value.etcdUrls.length === 0) {
    console.error(
      "error: --etcd-endpoints: no etcd endpoint given: pass --etcd-endpoints URL[,URL...] " +
        "(or set NGINX_LB_ETCD_ENDPOINTS, or HOST_IP and ETCD_PORT)",
    );
    return 2;
  }
  const checked = await checkEtcdOptions(c.value);
  if (!checked.ok) return fail(checked.errors);
  const auth = etcdAuth(c.value);
  const connection = {
    etcdUrls: c.value.etcdUrls,
    ...(auth ? { auth } : {}),
    ...(checked.tls ? { tls: checked.tls } : {}),
  };
  return { config: c.value, connection, logger: createLogger() };
}

function fail(errors: readonly Problem[]): number {
  for (const e of errors) console.error(`error: ${formatProblem(e)}`);
  return 1;
}

/**
 * Holds the key on a v3 lease until the signal aborts; re-grants and re-puts after a lost lease (etcd restart), and
 * puts the key back on the lease when someone else deletes it (watched from the revision of our own put, so a delete
 * in between is seen too).
 */
async function holdV3(config: Connection, reg: Registration, signal: AbortSignal, log: Logger) {
  const client = new Etcd3(etcd3ClientOptions(config));
  const retry = retryOptions();
  let attempt = 0;
  try {
    while (!signal.aborted) {
      const lease: Lease = client.lease(reg.ttl);
      const lost = new Promise<Error>((resolve) => lease.once("lost", resolve));
      // Ends the put-backs of this lease: when it is lost, when we stop, when the next lease takes over.
      const held = new AbortController();
      let watcher: Watcher | null = null;
      try {
        const put = await lease.put(reg.key).value(reg.value).exec();
        attempt = 0;
        const from = String(Number(put.header.revision) + 1);
        watcher = await client.watch().key(reg.key).startRevision(from).create();
        watcher.on("delete", (kv) => void putBack(lease, reg, kv.mod_revision, held.signal, log, config));
        watcher.on("error", (e) =>
          log.warn(
            { key: reg.key, reason: describeEtcdError(e, config) },
            "cannot watch the key; a delete stays unseen",
          ),
        );
        log.info({ key: reg.key, value: reg.value, ttl: reg.ttl }, "registered; renewing until SIGTERM");
        const why = await Promise.race([lost, untilAborted(signal)]);
        held.abort();
        // Before the revoke: our own delete must not be put back.
        await watcher.cancel().catch(() => undefined);
        if (why instanceof Error) {
          log.warn({ key: reg.key, reason: describeEtcdError(why, config) }, "lease lost; registering again");
          continue;
        }
        // Revoking the lease deletes the key now rather than after the TTL.
        await lease.revoke();
        log.info({ key: reg.key }, "deregistered");
        return;
      } catch (e) {
        held.abort();
        await watcher?.cancel().catch(() => undefined);
        lease.release();
        if (signal.aborted) return;
        log.error({ key: reg.key, reason: describeEtcdError(e, config) }, "could not register; retrying");
      }
      await abortableSleep(backoffDelay(attempt++, retry), signal);
    }
  } finally {
    client.close();
  }
}

/**
 * Someone deleted our key (etcdctl del, a clean-up script): puts it back on the lease, retried with backoff while the
 * lease is held, and says so once per delete. A delete by the lease's own expiry fails here and is handled as a lost
 * lease.
 */
async function putBack(
  lease: Lease,
  reg: Registration,
  revision: string | undefined,
  held: AbortSignal,
  log: Logger,
  config: Connection,
): Promise<void> {
  const started = performance.now();
  const retry = retryOptions();
  for (let attempt = 0; !held.aborted; attempt++) {
    try {
      await lease.put(reg.key).value(reg.value).exec();
      log.warn(
        { key: reg.key, deletedAtRevision: revision, ms: Math.round(performance.now() - started) },
        "the key was deleted by someone else; put it back on its lease (to remove the endpoint, stop this registrar: SIGTERM deletes it)",
      );
      return;
    } catch (e) {
      if (held.aborted) return;
      if (attempt === 0)
        log.warn(
          { key: reg.key, deletedAtRevision: revision, reason: describeEtcdError(e, config) },
          "the key was deleted by someone else and cannot be put back yet; retrying while the lease is held",
        );
    }
    await abortableSleep(backoffDelay(attempt, retry), held);
  }
}

/** Holds the key with a v2 TTL until the signal aborts, refreshing it at a third of the TTL (and putting it back). */
async function holdV2(config: Connection, reg: Registration, signal: AbortSignal, log: Logger) {
  const v2 = v2Client(config);
  let registered = false;
  let attempt = 0;
  while (!signal.aborted) {
    const body: Record<string, string> = registered
      ? { ttl: String(reg.ttl), refresh: "true", prevExist: "true" }
      : { ttl: String(reg.ttl), value: reg.value };
    const r = await v2.call("PUT", reg.key, body);
    if (r.ok) {
      if (!registered) log.info({ key: reg.key, value: reg.value, ttl: reg.ttl }, "registered; renewing until SIGTERM");
      registered = true;
      attempt = 0;
      await abortableSleep((reg.ttl * 1000) / 3, signal);
      continue;
    }
    // A refresh of a key that is gone (deleted by someone else, or expired while etcd was down longer than the TTL)
    // writes it again at once. v2 has no lease to watch: a delete is seen at the next refresh, a third of the TTL.
    if (registered && r.status === 404) {
      registered = false;
      log.warn({ key: reg.key }, "the key was deleted by someone else (or expired); putting it back");
      continue;
    }
    registered = false;
    log.error({ key: reg.key, status: r.status, reason: r.text.slice(0, 200) }, "could not register; retrying");
    await abortableSleep(backoffDelay(attempt++, retryOptions()), signal);
  }
  if (registered) {
    await v2.call("DELETE", reg.key);
    log.info({ key: reg.key }, "deregistered");
  }
}

/** A minimal v2 key client for register/deregister, with the same TLS and auth handling as the v2 source. */
export function v2Client(config: Connection) {
  return {
    call: async (method: "PUT" | "DELETE", key: string, form?: Record<string, string>) => {
      const url = new URL(v2KeyPath(key), config.etcdUrls[0] ?? "");
      try {
        const r = await v2Request(
          url,
          { tls: config.tls, auth: config.auth, method, ...(form ? { form } : {}) },
          new AbortController().signal,
          10_000,
        );
        if (r === "timeout") return { ok: false, status: 0, text: "timed out" };
        return { ok: true, status: 200, text: "" };
      } catch (e) {
        if (e instanceof EtcdV2Answer) return { ok: false, status: e.status, text: describeV2Error(e, config.auth) };
        return { ok: false, status: 0, text: (e as Error).message };
      }
    },
  };
}
