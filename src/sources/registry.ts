import type { Problem } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import type { EndpointSource } from "./source.js";
import {
  readTlsFiles,
  type EtcdAuthOptions,
  type EtcdSourceOptions,
  type EtcdTlsFiles,
  type EtcdTlsOptions,
  type RetryOptions,
} from "./registry-state.js";
import { etcdV3Source } from "./etcd-v3.js";
import { etcdV2Source } from "./etcd-v2.js";

/**
 * Where the registry is and how to reach it, as the etcd flags give it (`RunOptions.etcd`, register, deregister).
 * Files are paths. The password comes from the environment or a file, never from the command line.
 */
export interface EtcdOptions {
  readonly etcdUrls: readonly string[];
  readonly prefix: string;
  readonly api: "v3" | "v2";
  readonly cacert?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly username?: string;
  readonly password?: string;
  /** Tests only: control the reconnect backoff. */
  readonly retry?: Partial<RetryOptions>;
}

/**
 * Builds the etcd endpoint source for `options.api`. It never throws: what is wrong (an unreadable certificate, a
 * refused password, etcd down) is logged and retried while the last known endpoints keep serving.
 */
export function createEndpointSource(options: EtcdOptions, logger: Logger): EndpointSource {
  const o = sourceOptions(options, logger);
  return options.api === "v2" ? etcdV2Source(o) : etcdV3Source(o);
}

/** The options both sources take, from the run options. */
export function sourceOptions(options: EtcdOptions, logger: Logger): EtcdSourceOptions {
  const tls = tlsFiles(options);
  const auth = etcdAuth(options);
  return {
    etcdUrls: options.etcdUrls,
    prefix: options.prefix,
    logger,
    ...(tls ? { tls } : {}),
    ...(auth ? { auth } : {}),
    ...(options.retry ? { retry: options.retry } : {}),
  };
}

/** The credentials to send, when a user is given (checkEtcdOptions has made sure a password came with it). */
export function etcdAuth(options: EtcdOptions): EtcdAuthOptions | undefined {
  return options.username !== undefined ? { username: options.username, password: options.password ?? "" } : undefined;
}

/**
 * Checks what can be checked before connecting (endpoint URLs, readable TLS files, a password for the user), for
 * commands that should fail fast instead of retrying; returns the TLS material read.
 */
export async function checkEtcdOptions(
  options: EtcdOptions,
): Promise<{ ok: true; tls: EtcdTlsOptions | undefined } | { ok: false; errors: Problem[] }> {
  const errors: Problem[] = [];
  if (options.etcdUrls.length === 0)
    errors.push({ code: "etcd_endpoints", path: "--etcd-endpoints", message: "no etcd endpoint given" });
  for (const e of options.etcdUrls) {
    const url = URL.canParse(e) ? new URL(e) : undefined;
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:"))
      errors.push({
        code: "etcd_endpoints",
        path: "--etcd-endpoints",
        message: `${JSON.stringify(e)} is not an http(s):// URL`,
      });
  }
  if (options.username !== undefined && options.password === undefined)
    errors.push({
      code: "etcd_auth",
      path: "--etcd-username",
      message: "needs a password: set $NGINX_LB_ETCD_PASSWORD or pass --etcd-password-file",
    });
  const { tls, errors: tlsErrors } = await readTlsFiles(tlsFiles(options));
  errors.push(...tlsErrors);
  return errors.length > 0 ? { ok: false, errors } : { ok: true, tls };
}

function tlsFiles(options: EtcdOptions): EtcdTlsFiles | undefined {
  if (!options.cacert && !options.cert && !options.key) return undefined;
  return {
    ...(options.cacert ? { caFile: options.cacert } : {}),
    ...(options.cert ? { certFile: options.cert } : {}),
    ...(options.key ? { keyFile: options.key } : {}),
  };
}
