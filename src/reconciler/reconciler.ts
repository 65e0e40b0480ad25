import type { BackendSet } from "../model/backends.js";
import type { Services } from "../model/services.js";
import type { Desired } from "../render/index.js";
import type { ApplyOutcome, Target } from "../nginx/applier.js";
import type { Logger } from "../shared/log.js";
import { diffDesired, isEmptyChange, type Change } from "./diff.js";
import type { StatusStore } from "./status.js";
import { topologyOf } from "./topology.js";

/** The parts the reconciler drives; interfaces so tests and later modes can supply their own. */
export interface ReconcilerDeps {
  readonly render: (desired: Desired) => Target;
  readonly apply: (target: Target, force: boolean) => Promise<ApplyOutcome>;
  readonly persist: (desired: Desired) => Promise<void>;
  readonly status: StatusStore;
  readonly log: Logger;
  readonly now?: () => number;
  /** A lone change waits this long for companions before it is applied. */
  readonly debounceMs?: number;
  /** At least this long between the end of one apply and the start of the next: bursts cost few reloads. */
  readonly minGapMs?: number;
}

export const DEFAULT_DEBOUNCE_MS = 20;
export const DEFAULT_MIN_GAP_MS = 250;

/**
 * Keeps the latest routing model and endpoint snapshot, coalesces bursts into few applies, and applies only when
 * the rendered config changed. The one place coalescing lives (level-triggered: always the whole latest state).
 */
export class Reconciler {
  private services: Services | null = null;
  private backends: BackendSet | null = null;
  private applied: Desired | null = null;
  private reasons = new Set<string>();
  private force = false;
  private timer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  private lastEnd = -Infinity;
  private started = false;
  private retryMs = 0;
  private unsaved: Desired | null = null;
  private saving: Promise<void> | null = null;
  private readonly now: () => number;

  constructor(private readonly deps: ReconcilerDeps) {
    this.now = deps.now ?? (() => performance.now());
  }

  /** Sets the routing model (a valid one: invalid files never get here). */
  setServices(services: Services, reason: string): void {
    this.services = services;
    this.request(reason);
  }

  /** Sets the endpoint snapshot. */
  setBackends(backends: BackendSet, reason: string): void {
    this.backends = backends;
    this.request(reason);
  }

  /** Allows applies to begin (after the first snapshots or the start-up grace). */
  start(): void {
    this.started = true;
    this.request("start");
  }

  /** Asks for an apply; `force` reloads even an unchanged config (SIGHUP, nginx restart). */
  request(reason: string, force = false): void {
    this.reasons.add(reason);
    this.force ||= force;
    this.schedule(0);
  }

  /** Resolves when no apply is pending or running (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.busy || this.timer || this.saving)
      await (this.busy ?? this.saving ?? new Promise((r) => setTimeout(r, 5)));
  }

  /** Stops scheduling further applies. */
  stop(): void {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(extraDelay: number): void {
    if (!this.started || this.timer || this.busy || this.services === null) return;
    const debounce = this.deps.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    const gap = this.deps.minGapMs ?? DEFAULT_MIN_GAP_MS;
    const delay = Math.max(debounce, this.lastEnd + gap - this.now(), extraDelay);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.busy = this.runOnce().finally(() => {
        this.busy = null;
        this.lastEnd = this.now();
        if (this.reasons.size > 0) this.schedule(this.retryMs);
      });
    }, delay);
  }

  private async runOnce(): Promise<void> {
    const services = this.services;
    if (services === null) return;
    const desired: Desired = { services, backends: this.backends ?? {} };
    const reason = [...this.reasons].join(", ");
    const force = this.force;
    this.reasons.clear();
    this.force = false;
    const { status, log } = this.deps;

    const t0 = performance.now();
    let rendered: Target;
    try {
      rendered = this.deps.render(desired);
    } catch (e) {
      log.error({ err: (e as Error).message }, "render failed (a bug in nginx-lb)");
      status.recordApply({
        at: new Date().toISOString(),
        result: "failed",
        action: "none",
        reason,
        generation: "",
        ms: { render: 0, test: 0, reload: 0, total: 0 },
        error: `render failed: ${(e as Error).message}`,
      });
      return;
    }
    const renderMs = performance.now() - t0;
    const out = await this.deps.apply(rendered, force);
    const ms = {
      render: round(renderMs),
      test: round(out.ms.test),
      reload: round(out.ms.reload),
      total: round(renderMs + out.ms.total),
    };
    const at = new Date().toISOString();
    if (out.result === "unchanged") {
      if (this.applied !== desired) status.update(() => ({ topology: topologyOf(desired) }));
      this.applied = desired;
      status.recordApply({ at, result: "unchanged", action: "none", reason, generation: out.generation, ms });
      log.debug({ reason, generation: out.generation }, "config unchanged: no reload");
      this.save(desired);
      return;
    }
    const change = diffDesired(this.applied, desired);
    if (out.result === "failed") {
      status.recordApply({
        at,
        result: "failed",
        action: out.action,
        reason,
        generation: out.generation,
        ms,
        change: brief(change),
        ...(out.error ? { error: out.error } : {}),
      });
      status.update((s) => ({ nginx: { ...s.nginx, ...(out.error ? { lastError: out.error } : {}) } }));
      log.error({ reason, error: out.error, ms }, "apply failed: the previous config keeps serving");
      // A failed start or push is retried with backoff; a rejected config waits for the next change.
      if (out.action === "start" || out.action === "push") {
        this.retryMs = Math.min(Math.max(this.retryMs * 2, 100), 10_000);
        this.reasons.add("retry start");
      }
      return;
    }
    this.retryMs = 0;
    this.applied = desired;
    status.update(() => ({ topology: topologyOf(desired) }));
    status.recordApply({
      at,
      result: "applied",
      action: out.action,
      reason,
      generation: out.generation,
      ms,
      ...(isEmptyChange(change) ? {} : { change: brief(change) }),
    });
    log.info(
      {
        reason,
        action: out.action,
        generation: out.generation,
        ms,
        // Bounded: a first start with 10,000 routes would otherwise log one line of 10,000 names.
        upstreams: {
          added: change.upstreamsAdded.slice(0, 20),
          removed: change.upstreamsRemoved.slice(0, 20),
          addedCount: change.upstreamsAdded.length,
          removedCount: change.upstreamsRemoved.length,
        },
        endpoints: {
          added: change.endpointsAdded.slice(0, 20),
          removed: change.endpointsRemoved.slice(0, 20),
          addedCount: change.endpointsAdded.length,
          removedCount: change.endpointsRemoved.length,
        },
      },
      out.action === "start" ? "nginx started" : out.action === "push" ? "endpoints pushed" : "config applied",
    );
    this.save(desired);
  }

  /** Persists what nginx now serves, endpoints of keys no route uses included, for the next start. */
  private save(desired: Desired): void {
    // Off the apply path and coalesced: with 10,000 endpoints a write + fsync would delay the next change.
    this.unsaved = desired;
    this.saving ??= (async () => {
      for (let d = this.unsaved; d !== null; d = this.unsaved) {
        this.unsaved = null;
        await this.deps
          .persist(d)
          .catch((e: unknown) => this.deps.log.warn({ err: (e as Error).message }, "could not save state"));
      }
      this.saving = null;
    })();
  }
}

const round = (n: number) => Math.round(n * 10) / 10;

/**
 * A change as the status keeps it (the last 50 applies): at most 100 names per list. A first start with 100,000
 * endpoints would otherwise hold that many strings per record; the counts stay exact.
 */
function brief(c: Change): Change {
  const cut = (l: readonly string[]) => (l.length > 100 ? [...l.slice(0, 100), `... and ${l.length - 100} more`] : l);
  return {
    upstreamsAdded: cut(c.upstreamsAdded),
    upstreamsRemoved: cut(c.upstreamsRemoved),
    endpointsAdded: cut(c.endpointsAdded),
    endpointsRemoved: cut(c.endpointsRemoved),
    counts: {
      upstreamsAdded: c.upstreamsAdded.length,
      upstreamsRemoved: c.upstreamsRemoved.length,
      endpointsAdded: c.endpointsAdded.length,
      endpointsRemoved: c.endpointsRemoved.length,
    },
  };
}
