/**
 * The routing source `run` chooses: the services file (as always), or the table in etcd with
 * `--services-etcd-prefix`. Both feed the same reconciler calls and say in the status where the routes come from.
 */
import type { Reconciler } from "../reconciler/reconciler.js";
import type { StatusStore } from "../reconciler/status.js";
import type { Logger } from "../shared/log.js";
import { TableStore } from "../state/store.js";
import { nodeTlsInspector } from "../tls/inspect.js";
import type { EtcdOptions } from "./registry.js";
import { ServicesFileSource } from "./services-source.js";

/** What `run` does with the routing source afterwards: SIGUSR2 and SIGHUP re-read it. */
export interface RoutesHandle {
  reload(reason: string, asked?: boolean): Promise<void>;
}

type Sink = Pick<Reconciler, "setServices" | "servicesRejected">;

/** services.json: read once now (so the first apply has it), then on change and on reload. */
export async function startFileRoutes(
  file: string,
  watch: boolean,
  reconciler: Sink,
  status: StatusStore,
  log: Logger,
  signal: AbortSignal,
): Promise<RoutesHandle> {
  status.update(() => ({ routes: { kind: "file", file } }));
  const services = new ServicesFileSource(file, watch, log);
  await services.start(
    signal,
    (snap) => reconciler.setServices(snap),
    (errors, warnings) => reconciler.servicesRejected(errors, warnings),
  );
  return { reload: (reason, asked) => services.reload(reason, asked) };
}

/**
 * The table in etcd: started in the background (it retries for ever while etcd is down), waiting up to `graceMs` for
 * its first table so the first apply serves it; until then the routes saved in the state dir serve.
 */
export async function startEtcdRoutes(
  etcd: EtcdOptions,
  dir: string,
  reconciler: Sink,
  status: StatusStore,
  log: Logger,
  signal: AbortSignal,
  o: { graceMs: number },
): Promise<RoutesHandle> {
  // Loaded here, not at the top: the etcd client (gRPC) takes a second to load on a busy machine, and a controller
  // with a services file never needs it.
  const [{ sourceOptions }, { EtcdServicesSource }] = await Promise.all([
    import("./registry.js"),
    import("./services-etcd.js"),
  ]);
  const source = new EtcdServicesSource({
    ...sourceOptions(etcd, log),
    store: new TableStore(dir),
    inspectTls: nodeTlsInspector,
    report: (r) => status.update(() => ({ routes: { kind: "etcd", ...r } })),
  });
  status.update(() => ({
    routes: {
      kind: "etcd",
      prefix: etcd.prefix,
      revision: 0,
      connected: false,
      origin: "not yet read",
      keys: 0,
      rejected: [],
    },
  }));
  let first: () => void = () => undefined;
  const firstTable = new Promise<void>((r) => (first = r));
  void source
    .start(
      signal,
      (snap) => {
        reconciler.setServices(snap);
        first();
      },
      (errors, warnings) => reconciler.servicesRejected(errors, warnings),
    )
    .catch((e: unknown) => log.error({ err: (e as Error).message }, "the etcd routing source stopped"));
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([firstTable, new Promise<void>((r) => (timer = setTimeout(r, o.graceMs)))]);
  clearTimeout(timer);
  return {
    // The table follows etcd's watch; a signal has nothing to re-read.
    reload: (reason) => {
      log.info({ reason, prefix: etcd.prefix }, "the routes come from etcd and follow its watch: nothing to re-read");
      return Promise.resolve();
    },
  };
}
