import type { Reconciler } from "./reconciler/reconciler.js";
import type { StatusStore } from "./reconciler/status.js";
import type { EtcdOptions } from "./sources/registry.js";

/** A running controller: its status and a way to stop it. */
export interface Controller {
  readonly status: StatusStore;
  readonly reconciler: Reconciler;
  /** Where the routing table lives in etcd (`prefix` is the table's) with `--services-etcd-prefix`; else absent. */
  readonly routesEtcd?: EtcdOptions;
  /** Re-reads services.json (SIGUSR2). */
  reloadServices(reason: string): Promise<void>;
  /** Re-reads and reloads even if unchanged (SIGHUP). */
  forceReload(reason: string): Promise<void>;
  /** Stops sources; with `stopNginx` also stops nginx gracefully (SIGTERM), otherwise leaves it serving. */
  stop(stopNginx: boolean): Promise<void>;
}
