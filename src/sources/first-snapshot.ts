import type { BackendSet } from "../model/backends.js";
import type { Problem } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import type { EndpointSource, Snapshot } from "./source.js";

/** Where the registry's snapshots go (the reconciler), and whether it still waits for a source of truth. */
export interface RegistrySink {
  setRegistry(kind: string, snap: Snapshot<BackendSet>): void;
  registryRejected(errors: readonly Problem[], warnings: readonly Problem[]): void;
  readonly waitingFor: string | null;
}

export interface FirstSnapshotOptions {
  /** How long the start waits for the registry's first answer before applying what it knows. */
  readonly graceMs: number;
  /** After this long without an answer, say so loudly (the controller keeps running); none when absent. */
  readonly startTimeoutMs?: number;
  /** Whether endpoints from an earlier run are known (state dir): decides what the messages promise. */
  readonly savedEndpoints: boolean;
  readonly signal: AbortSignal;
}

const seconds = (ms: number) => (ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`);

/**
 * Starts the endpoint source and waits up to the grace period for its first answer, so a start with etcd up applies
 * the live registry rather than the state dir's copy, and a start with etcd down says what is served meanwhile. The
 * source itself keeps retrying; nothing here stops the controller.
 */
export async function startRegistry(
  source: EndpointSource,
  sink: RegistrySink,
  options: FirstSnapshotOptions,
  log: Logger,
): Promise<void> {
  let answered = false;
  let first: () => void = () => undefined;
  const firstSnapshot = new Promise<void>((r) => (first = r));
  void source
    .start(
      options.signal,
      (snap) => {
        sink.setRegistry(source.name, snap);
        if (snap.connected) {
          answered = true;
          first();
        }
      },
      (errors, warnings) => sink.registryRejected(errors, warnings),
    )
    .catch((e: unknown) => log.error({ err: (e as Error).message }, "endpoint source stopped"));
  const timeout = options.startTimeoutMs;
  if (timeout !== undefined)
    setTimeout(() => {
      if (answered || options.signal.aborted) return;
      log.error(
        { registry: source.name, startTimeoutMs: timeout },
        options.savedEndpoints
          ? `the registry has not answered within --start-timeout (${seconds(timeout)}): still serving the last known endpoints (state dir) and retrying; check that etcd is up and reachable`
          : `the registry has not answered within --start-timeout (${seconds(timeout)}) and no endpoints were ever known: every route answers 503 until it does; nginx-lb keeps running and retrying; check that etcd is up and reachable`,
      );
    }, timeout).unref();
  const timedOut = await Promise.race([
    firstSnapshot.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(true), options.graceMs).unref()),
  ]);
  if (!timedOut) return;
  if (sink.waitingFor !== null)
    log.warn(
      { registry: source.name },
      "the registry did not answer in time; nginx keeps serving what it had until it does (no saved endpoints to apply)",
    );
  else
    log.warn(
      { registry: source.name, endpoints: options.savedEndpoints ? "last known (state dir)" : "none yet" },
      options.savedEndpoints
        ? "the registry did not answer in time; serving the last known endpoints while retrying"
        : "the registry did not answer in time and no endpoints are known yet: every route answers 503 until it does; retrying",
    );
}
