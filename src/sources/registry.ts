import { readFile } from "node:fs/promises";
import type { Checked, Problem } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import type { EndpointSource } from "./source.js";
import type { EtcdSourceOptions, EtcdTlsOptions, RetryOptions } from "./registry-state.js";
import { etcdV3Source } from "./etcd-v3.js";
import { etcdV2Source } from "./etcd-v2.js";

/** Where the registry is and how to reach it; files are paths, read when the source is created. */
export interface EndpointSourceConfig {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly api: "v3" | "v2";
  readonly tls?: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string };
  /** The password comes from the environment or a file (see src/cli/etcd-options.ts), never from the command line. */
  readonly auth?: { readonly username: string; readonly password: string };
  readonly retry?: Partial<RetryOptions>;
}

/** Builds the etcd endpoint source for `config.api`; unreadable TLS files or bad endpoints are problems, not throws. */
export async function createEndpointSource(
  config: EndpointSourceConfig,
  logger: Logger,
): Promise<Checked<EndpointSource>> {
  const options = await resolveEtcdOptions(config, logger);
  if (!options.ok) return options;
  const source = config.api === "v2" ? etcdV2Source(options.value) : etcdV3Source(options.value);
  return { ok: true, value: source, warnings: [] };
}

/** Checks the endpoints and reads the TLS files: the connection options every etcd user here (sources, register) takes. */
export async function resolveEtcdOptions(
  config: EndpointSourceConfig,
  logger: Logger,
): Promise<Checked<EtcdSourceOptions>> {
  const errors: Problem[] = [];
  if (config.endpoints.length === 0)
    errors.push({ code: "etcd_endpoints", path: "--etcd-endpoints", message: "no etcd endpoint given" });
  for (const e of config.endpoints) {
    const url = URL.canParse(e) ? new URL(e) : undefined;
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:"))
      errors.push({
        code: "etcd_endpoints",
        path: "--etcd-endpoints",
        message: `${JSON.stringify(e)} is not an http(s):// URL`,
      });
  }
  const tls = await readTls(config.tls, errors);
  if (config.tls?.certFile && !config.tls.keyFile)
    errors.push({ code: "etcd_tls", path: "--etcd-key", message: "--etcd-cert needs --etcd-key (the client key)" });
  if (errors.length > 0) return { ok: false, errors, warnings: [] };
  return {
    ok: true,
    value: {
      endpoints: config.endpoints,
      prefix: config.prefix,
      logger,
      ...(tls ? { tls } : {}),
      ...(config.auth ? { auth: config.auth } : {}),
      ...(config.retry ? { retry: config.retry } : {}),
    },
    warnings: [],
  };
}

async function readTls(tls: EndpointSourceConfig["tls"], errors: Problem[]): Promise<EtcdTlsOptions | undefined> {
  if (!tls || (!tls.caFile && !tls.certFile && !tls.keyFile)) return undefined;
  const read = async (file: string | undefined, flag: string): Promise<Buffer | undefined> => {
    if (!file) return undefined;
    try {
      return await readFile(file);
    } catch (e) {
      errors.push({ code: "etcd_tls", path: flag, message: `${file}: ${(e as Error).message}` });
      return undefined;
    }
  };
  const ca = await read(tls.caFile, "--etcd-cacert");
  const cert = await read(tls.certFile, "--etcd-cert");
  const key = await read(tls.keyFile, "--etcd-key");
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}
