import type { EtcdOptions } from "../app.js";
import type { Logger } from "../shared/log.js";
import type { EndpointSource } from "./source.js";

/** Builds the etcd endpoint source (v3 or v2) from the run options. */
export function createEndpointSource(_options: EtcdOptions, _log: Logger): EndpointSource {
  throw new Error("etcd registry support is not built yet: use --backends FILE");
}
