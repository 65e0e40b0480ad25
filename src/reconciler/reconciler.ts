import { NO_HEALTH, type Health } from "../health/targets.js";
import type { BackendSet } from "../model/backends.js";
import { formatProblem, type Problem } from "../model/problem.js";
import type { Services } from "../model/services.js";
import { reservedPortProblems, type ReservedPort } from "../model/reserved-ports.js";
import type { Desired, RenderOptions } from "../render/index.js";
import type { Logger } from "../shared/log.js";
import type { Snapshot } from "../sources/source.js";
import type { Applier, ApplyOutcome } from "./applier.js";
import { systemClock, type Clock } from "./clock.js";
import { isEmptyChange } from "./diff.js";
import { initialRouting, nextRouting, routesToApply, type Routing, type RoutingEvent } from "./routing.js";
import type { StatusStore } from "./status.js";
import { compile, type EndpointsMode, type Target } from "./target.js";

/** The parts the reconciler drives; interfaces so tests and later modes can supply their own. */
export interface ReconcilerDeps {
  readonly applier: Applier;
  /** Saves what nginx serves for the next start; may throw (a full or read-only state dir). */
  readonly persist: (desired: Desired) => Promise<void>;
  readonly status: StatusStore;
  readonly log: Logger;
  readonly mode: EndpointsMode;
  readonly renderOptions: RenderOptions;
  readonly clock?: Clock;
  /** A lone change waits this long for companions before it is applied. */
  readonly debounceMs?: number;
  /** At least this long between the end of one apply and the start of the next: bursts cost few reloads. */
  readonly minGapMs?: number;
  /**
   * At least this long between the end of one save of state.json and the start of the next (DEFAULT_SAVE_GAP_MS): the
   * first change after a quiet spell is saved at once, the changes of a burst once per gap, the latest wins.
   */
  readonly saveGapMs?: number;
  /**
   * How long failed first starts of nginx (a port still held by a draining predecessor) are retried after start();
   * then `gaveUp` is told nginx's error once and no further start is tried. Unbounded when absent.
   */
  readonly startTimeoutMs?: number;
  readonly gaveUp?: (error: string) => void;
  /** Ports nginx-lb listens on itself: a routing table whose servers claim one is refused, as an invalid file is. */
  readonly reservedPorts?: readonly ReservedPort[];
}

export const DEFAULT_DEBOUNCE_MS = 20;
export const DEFAULT_MIN_GAP_MS = 250;
/**
 * state.json is the whole routing table and registry (megabytes at 10,000 sites): written after every change of a
 * burst, its encoding, write and fsync would take the controller's CPU from the changes that follow. It is used only
 * when the controller starts without its sources: a controller killed (SIGKILL) in a burst and restarted while its
 * sources are down serves up to this much less recent a state until they answer. A stop writes the latest first
 * (stop); the start-up files nginx itself loads are held back as long (applier.ts).
 */
export const DEFAULT_SAVE_GAP_MS = 1_000;
/** The longest wait before retrying a failed apply or save. */
export const MAX_RETRY_MS = 10_000;

const backoff = (ms: number) => Math.min(Math.max(ms * 2, 100), MAX_RETRY_MS);
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** What the status says while an adopted nginx waits for a source of truth before the first apply. */
export const WAITING_FOR_REGISTRY = "waiting for the registry; nginx keeps serving what it had";

/**
 * Keeps the latest routing model and endpoint snapshot, coalesces bursts into few applies, compiles each apply's
 * target once (against the last applied one) and hands it to the applier. The one place coalescing lives
 * (level-triggered: always the whole latest state) and the only writer of the status. Nothing thrown escapes it:
 * a throw from the applier or the persist becomes a failed record and a retry with backoff. A routing change nginx
 * refuses stays pending (see routing.ts): endpoint changes keep applying on the routes in force meanwhile.
 */
export class Reconciler {
  private routing: Routing<Services> = initialRouting;
  /** The timer of the next try of a pending routing change. */
  private pendingTimer: unknown = null;
  /** The refusal last logged: one log line per distinct error, not one per retry. */
  private pendingLogged: string | null = null;
  /** Set while an adopted nginx waits for a source of truth: no apply may serve less than it serves. */
  private waiting: string | null = null;
  private backends: BackendSet | null = null;
  private health: Health = NO_HEALTH;
  /** The target nginx was last confirmed to serve (applied, or found unchanged). */
  private applied: Target | null = null;
  private reasons = new Set<string>();
  private force = false;
  private timer: unknown = null;
  private busy: Promise<void> | null = null;
  private lastEnd = -Infinity;
  private started = false;
  private retryMs = 0;
  private unsaved: Desired | null = null;
  private saving: Promise<void> | null = null;
  private saveTimer: unknown = null;
  private saveRetryMs = 0;
  private saveError: string | null = null;
  private saveFailingSince: string | null = null;
  /** When the last save ended (saved or failed); the next starts `saveGapMs` after it at the earliest. */
  private lastSaveEnd = -Infinity;
  private idleWaiters: (() => void)[] = [];
  private readonly clock: Clock;
  /** When start() allowed applies; the start timeout counts from here. */
  private startedAt = 0;
  /** Some nginx was confirmed serving (adopted, started, applied): a failure since leaves something serving. */
  private served = false;
  /** The failed apply last logged: one log line per distinct error, not one per retry. */
  private failLogged: string | null = null;

  constructor(private readonly deps: ReconcilerDeps) {
    this.clock = deps.clock ?? systemClock;
  }

  /**
   * Takes the last applied state from the state dir as the starting point (no status: no source said so yet): its
   * routes were in force when it was saved. With an adopted nginx and no saved endpoints (state.json missing or
   * corrupt), nothing is applied until a source sends endpoints: an apply now would serve less than nginx serves.
   */
  restore(
    saved: { readonly services?: Services | undefined; readonly backends?: BackendSet | undefined },
    nginxAdopted = false,
  ): void {
    // Saved routes that claim a port reserved since (a new --control-port) would render a config nginx accepts and
    // then answers the controller from a frontend server: they are dropped, and services.json says why when read.
    const clash = saved.services ? reservedPortProblems(saved.services, this.deps.reservedPorts ?? []) : [];
    if (clash.length > 0)
      this.deps.log.warn(
        { errors: clash.map(formatProblem) },
        "the last applied routes claim a port nginx-lb now uses itself: they are not restored",
      );
    else if (saved.services) this.routing = { wanted: saved.services, inForce: saved.services, pending: null };
    if (saved.backends) this.backends = saved.backends;
    else if (nginxAdopted) {
      this.waiting = WAITING_FOR_REGISTRY;
      this.deps.status.update(() => ({ waiting: WAITING_FOR_REGISTRY }));
      this.deps.log.warn(
        "no saved endpoints for the running nginx: nothing is applied until the registry answers; nginx keeps serving what it had",
      );
    }
    if (saved.services || saved.backends) this.request("last applied state");
  }

  /** Why no apply runs yet (an adopted nginx waiting for a source of truth), or null. */
  get waitingFor(): string | null {
    return this.waiting;
  }

  /** A valid services.json: records it in the status and applies it. */
  setServices(snap: Snapshot<Services>): void {
    const clash = reservedPortProblems(snap.value, this.deps.reservedPorts ?? []);
    if (clash.length > 0) {
      this.servicesRejected(clash, snap.warnings);
      return;
    }
    const { status, log } = this.deps;
    const file = status.get().services.file;
    status.update(() => ({
      services: { file, valid: true, errors: [], warnings: snap.warnings, loadedAt: this.clock.date().toISOString() },
    }));
    for (const w of snap.warnings) log.warn({ file }, `services.json: ${formatProblem(w)}`);
    // A new file is tried at once: whatever was pending is replaced, its backoff reset.
    this.routingEvent({ kind: "wanted", services: snap.value });
    this.request(`services.json: ${snap.origin}`);
  }

  /** An invalid services.json: the last valid routes stay in force, and the status says why. */
  servicesRejected(errors: readonly Problem[], warnings: readonly Problem[]): void {
    const { status, log } = this.deps;
    const file = status.get().services.file;
    status.update((s) => ({
      services: {
        file,
        valid: false,
        errors,
        warnings,
        loadedAt: this.clock.date().toISOString(),
        ...(s.services.pending ? { pending: s.services.pending } : {}),
      },
    }));
    log.error(
      { file, errors: errors.map(formatProblem) },
      "services.json is invalid; the last valid routes stay in force",
    );
  }

  /** Sets the endpoint snapshot. */
  setBackends(backends: BackendSet, reason: string): void {
    this.backends = backends;
    if (this.waiting !== null) {
      this.waiting = null;
      this.deps.status.update(() => ({ waiting: undefined }));
      this.deps.log.info({ reason }, "a source of truth answered: applying");
    }
    this.request(reason);
  }

  /** A registry emission: its health goes to the status; its endpoints are applied only while connected. */
  setRegistry(kind: string, snap: Snapshot<BackendSet>): void {
    this.deps.status.update(() => ({
      registry: {
        kind,
        connected: snap.connected,
        origin: snap.origin,
        warnings: snap.warnings,
        valid: true,
        errors: [],
      },
    }));
    if (snap.connected) this.setBackends(snap.value, `registry: ${snap.origin}`);
  }

  /** New health-check verdicts: compiled in like an endpoint change, coalesced with any other. */
  setHealth(health: Health): void {
    this.health = health;
    this.request("health check");
  }

  /** The registry's content was rejected as a whole (an invalid backends file): the endpoints in force stay. */
  registryRejected(errors: readonly Problem[], warnings: readonly Problem[]): void {
    this.deps.status.update((s) => ({ registry: { ...s.registry, valid: false, errors, warnings } }));
  }

  /** No registry configured: every route answers 503, and the status says how to change that. */
  noRegistry(origin: string): void {
    this.deps.status.update(() => ({
      registry: { kind: "none", connected: false, origin, warnings: [], valid: true, errors: [] },
    }));
    this.setBackends({}, "no registry");
  }

  /** nginx runs (adopted, started or restarted): records it and, with a reason, applies the latest state to it. */
  nginxRunning(reason?: string): void {
    this.served = true;
    this.recordNginx();
    if (reason !== undefined) this.request(reason);
  }

  /** nginx exited unexpectedly. */
  nginxExited(why: string): void {
    this.deps.status.update((s) => ({ nginx: { ...s.nginx, running: false, pid: null, lastError: why } }));
  }

  /** Allows applies to begin (after the first snapshots or the start-up grace). */
  start(): void {
    this.started = true;
    this.startedAt = this.clock.now();
    this.request("start");
  }

  /** Asks for an apply; `force` reloads even an unchanged config (SIGHUP, nginx restart). */
  request(reason: string, force = false): void {
    this.reasons.add(reason);
    this.force ||= force;
    this.schedule(0);
  }

  /** Resolves when no apply or save is pending or running (a save waiting to be retried does not count). */
  async idle(): Promise<void> {
    while (this.busy || this.timer !== null || this.saving) {
      if (this.busy) await this.busy;
      else if (this.saving) await this.saving;
      else await new Promise<void>((r) => this.idleWaiters.push(r));
    }
  }

  /** Stops scheduling further applies and save retries. */
  stop(): void {
    this.started = false;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    if (this.saveTimer !== null) this.clock.clearTimeout(this.saveTimer);
    if (this.pendingTimer !== null) this.clock.clearTimeout(this.pendingTimer);
    this.timer = null;
    this.saveTimer = null;
    this.pendingTimer = null;
    // A save held back by the gap is written now (started is false: at once): a stop must not lose the last applied
    // state. One waiting for the retry of a failed save is not: the disk said no, and a stop must not wait on it.
    if (this.unsaved !== null && this.saveError === null) this.save(this.unsaved);
    this.wake();
  }

  private wake(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private schedule(extraDelay: number): void {
    if (!this.started || this.timer !== null || this.busy || this.routing.wanted === null || this.waiting !== null)
      return;
    const debounce = this.deps.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    const gap = this.deps.minGapMs ?? DEFAULT_MIN_GAP_MS;
    const delay = Math.max(debounce, this.lastEnd + gap - this.clock.now(), extraDelay);
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.busy = this.runOnce()
        .catch((e: unknown) => this.deps.log.error({ err: message(e) }, "reconciler failed (a bug in nginx-lb)"))
        .finally(() => {
          this.busy = null;
          this.lastEnd = this.clock.now();
          if (this.reasons.size > 0) this.schedule(this.retryMs);
          this.wake();
        });
      this.wake();
    }, delay);
  }

  private async runOnce(): Promise<void> {
    const services = routesToApply(this.routing, this.clock.now());
    if (services === null) return;
    const desired: Desired = { services, backends: this.backends ?? {} };
    const onRoutesInForce = services !== this.routing.wanted;
    const reason = [...this.reasons].join(", ") + (onRoutesInForce ? " (on the routes in force)" : "");
    const force = this.force;
    this.reasons.clear();
    this.force = false;
    const { status, log, applier } = this.deps;

    const t0 = this.clock.now();
    log.debug({ reason }, "apply started");
    let target: Target;
    try {
      target = compile(desired, this.applied, this.deps.mode, this.deps.renderOptions, this.health);
    } catch (e) {
      // A render bug: the same input fails the same way, so it waits for the next change.
      log.error({ err: message(e) }, "render failed (a bug in nginx-lb)");
      status.recordApply({
        at: this.clock.date().toISOString(),
        result: "failed",
        action: "none",
        reason,
        generation: "",
        ms: { render: 0, test: 0, reload: 0, total: 0 },
        error: `render failed: ${message(e)}`,
      });
      return;
    }
    const renderMs = this.clock.now() - t0;
    let out: ApplyOutcome;
    try {
      out = await applier.apply(target, force);
    } catch (e) {
      out = {
        result: "failed",
        action: "none",
        generation: target.rendered.generation,
        error: `apply failed: ${message(e)}`,
        retry: true,
        ms: { test: 0, reload: 0, total: this.clock.now() - t0 - renderMs },
      };
    }
    this.recordNginx();
    const ms = {
      render: round(renderMs),
      test: round(out.ms.test),
      reload: round(out.ms.reload),
      total: round(renderMs + out.ms.total),
    };
    const at = this.clock.date().toISOString();
    // nginx refused the routes (nginx -t, or a running nginx could not take the reload): what may be a routing change
    // it cannot take yet, e.g. a port another process holds.
    const refused = out.result === "failed" && out.retry !== true;
    const pendingBefore = this.routing.pending;
    this.routingEvent(
      out.result !== "failed"
        ? { kind: "accepted", services }
        : refused
          ? { kind: "refused", services, error: out.error ?? "nginx refused the config" }
          : null,
    );
    if (out.result === "failed") {
      status.recordApply({
        at,
        result: "failed",
        action: out.action,
        reason,
        generation: out.generation,
        ms,
        change: target.change,
        ...(out.error ? { error: out.error } : {}),
      });
      if (out.error) status.update((s) => ({ nginx: { ...s.nginx, lastError: out.error } }));
      // Nothing has served yet: what did not heal within the start timeout (a held port, a port under 1024
      // without the capability) ends the start instead of leaving a daemon that never serves.
      const firstStart = out.action === "start" && !this.served;
      const limit = this.deps.startTimeoutMs;
      const left = limit === undefined ? Infinity : limit - (this.clock.now() - this.startedAt);
      if (firstStart && left <= 0) {
        log.debug({ error: out.error }, "giving up on starting nginx: the start timeout has passed");
        this.deps.gaveUp?.(out.error ?? "nginx did not start");
        return;
      }
      // The controller is stopping (an apply in flight when stop() came, cut short by it): nothing to retry or alarm.
      // A start whose confirmation the stop cut short had nginx load this target, and its endpoints came from the
      // registry: saved, so a restart that finds the registry down serves them rather than 503 (etcd.test.ts, "a
      // stop during the first start").
      if (!this.started) {
        if (out.cutShort) this.save(desired);
        log.info(
          { reason, error: out.error },
          out.cutShort
            ? "the controller is stopping: nginx's start was not confirmed; its routes and endpoints are saved"
            : "an apply in flight did not complete: the controller is stopping",
        );
        return;
      }
      const pending = this.routing.pending;
      if (refused && pending !== null && pending !== pendingBefore) {
        this.routingRefused(reason, ms);
        return;
      }
      // What may heal by itself (nginx unreachable, a full state dir) is retried with backoff, a first start at the
      // latest when the start timeout ends; a config nginx rejected waits for the next change.
      const retryInMs = out.retry ? Math.min(backoff(this.retryMs), firstStart ? Math.max(left, 0) : Infinity) : 0;
      const key = errorKey(out.error ?? "");
      if (key !== this.failLogged)
        log.error(
          { reason, error: out.error, ms, ...(out.retry ? { retryInMs } : {}) },
          this.deps.applier.state().running
            ? "apply failed: the previous config keeps serving"
            : this.served
              ? "apply failed: nginx is not running, nothing is serving until it starts again"
              : firstStart && out.retry && limit !== undefined
                ? `apply failed: nginx could not start, nothing is serving yet; retrying for up to ${seconds(limit)} (--start-timeout)`
                : "apply failed: nothing is serving yet",
        );
      else log.debug({ error: out.error, retryInMs }, "the same apply failed again");
      this.failLogged = key;
      if (out.retry) {
        this.retryMs = retryInMs;
        this.reasons.add("retry after a failed apply");
        this.force ||= force;
      }
      return;
    }
    this.retryMs = 0;
    this.served = true;
    this.failLogged = null;
    const before = this.applied;
    this.applied = target;
    if (target.topology !== before?.topology) status.update(() => ({ topology: target.topology }));
    if (out.result === "unchanged") {
      status.recordApply({ at, result: "unchanged", action: "none", reason, generation: out.generation, ms });
      log.debug({ reason, generation: out.generation }, "config unchanged: no reload");
      this.save(desired);
      return;
    }
    const change = target.change;
    status.recordApply({
      at,
      result: "applied",
      action: out.action,
      reason,
      generation: out.generation,
      ms,
      ...(isEmptyChange(change) ? {} : { change }),
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
          addedCount: change.counts?.upstreamsAdded ?? change.upstreamsAdded.length,
          removedCount: change.counts?.upstreamsRemoved ?? change.upstreamsRemoved.length,
        },
        endpoints: {
          added: change.endpointsAdded.slice(0, 20),
          removed: change.endpointsRemoved.slice(0, 20),
          addedCount: change.counts?.endpointsAdded ?? change.endpointsAdded.length,
          removedCount: change.counts?.endpointsRemoved ?? change.endpointsRemoved.length,
        },
      },
      out.action === "start" ? "nginx started" : out.action === "push" ? "endpoints pushed" : "config applied",
    );
    this.save(desired);
  }

  /** Moves the routing state on; a pending change that is gone (taken, or replaced by a new file) leaves the status. */
  private routingEvent(event: RoutingEvent<Services> | null): void {
    if (event === null) return;
    const before = this.routing.pending;
    this.routing = nextRouting(this.routing, event, this.clock.now());
    if (before === null || this.routing.pending !== null) return;
    if (this.pendingTimer !== null) this.clock.clearTimeout(this.pendingTimer);
    this.pendingTimer = null;
    this.pendingLogged = null;
    if (event.kind === "accepted")
      this.deps.log.info({ pendingSince: this.iso(before.since) }, "the pending routing change is in force now");
    this.deps.status.update((s) => {
      const { pending: _, ...services } = s.services;
      return { services };
    });
  }

  /**
   * nginx refused the wanted routes: the status says so, the log once per distinct error, a timer retries them, and
   * the latest endpoints go out at once on the routes in force.
   */
  private routingRefused(reason: string, ms: object): void {
    const p = this.routing.pending;
    if (p === null) return;
    const { status, log } = this.deps;
    const pending = { since: this.iso(p.since), error: p.error, nextRetryAt: this.iso(p.nextRetryAt) };
    status.update((s) => ({ services: { ...s.services, pending } }));
    const key = errorKey(p.error);
    if (key !== this.pendingLogged)
      log.error(
        { reason, error: p.error, ms, retryInMs: p.retryMs, routesInForce: this.routing.inForce !== null },
        this.routing.inForce !== null || this.served
          ? "apply failed: nginx refused the new routes (is a port held by another process?); they stay pending and are retried by themselves, endpoint changes keep applying on the routes in force"
          : "apply failed: nginx refused the routes: nothing is serving yet; they are retried by themselves",
      );
    else log.debug({ error: p.error, retryInMs: p.retryMs }, "the pending routing change was refused again");
    this.pendingLogged = key;
    if (this.pendingTimer !== null) this.clock.clearTimeout(this.pendingTimer);
    this.pendingTimer = null;
    if (this.started)
      this.pendingTimer = this.clock.setTimeout(() => {
        this.pendingTimer = null;
        this.request("retry the pending routing change");
      }, p.retryMs);
    if (this.routing.inForce !== null) this.request("a routing change is pending");
  }

  /** A monotonic time as a wall-clock ISO string, for the status. */
  private iso(t: number): string {
    return new Date(this.clock.date().getTime() + (t - this.clock.now())).toISOString();
  }

  private recordNginx(): void {
    const state = this.deps.applier.state();
    this.deps.status.update((s) => ({ nginx: { ...s.nginx, ...state, endpointsMode: this.deps.mode } }));
  }

  /** Persists what nginx now serves, endpoints of keys no route uses included, for the next start. */
  private save(desired: Desired): void {
    // Off the apply path and coalesced: one save in flight or waiting, and it takes the latest state when it starts.
    // While a failed save waits for its retry, the retry takes the latest state.
    this.unsaved = desired;
    if (this.saving || this.saveTimer !== null) return;
    const wait = this.lastSaveEnd + (this.deps.saveGapMs ?? DEFAULT_SAVE_GAP_MS) - this.clock.now();
    if (wait > 0 && this.started) {
      this.saveTimer = this.clock.setTimeout(() => {
        this.saveTimer = null;
        if (this.unsaved) this.save(this.unsaved);
      }, wait);
      return;
    }
    this.saving = this.saveOnce().finally(() => {
      this.saving = null;
      this.lastSaveEnd = this.clock.now();
      // What arrived meanwhile waits for the gap (a failed save's retry timer is already set).
      if (this.unsaved !== null && this.saveTimer === null && this.saveError === null) this.save(this.unsaved);
      this.wake();
    });
  }

  private async saveOnce(): Promise<void> {
    const d = this.unsaved;
    if (d === null) return;
    this.unsaved = null;
    try {
      await this.deps.persist(d);
    } catch (e) {
      this.unsaved ??= d;
      this.saveFailed(message(e));
      return;
    }
    this.saveWorked();
  }

  private saveFailed(error: string): void {
    const { status, log } = this.deps;
    this.saveRetryMs = backoff(this.saveRetryMs);
    // Logged once per distinct error: a full disk retried every 10 s must not flood the log it may share.
    if (error !== this.saveError)
      log.error(
        { err: error, retryInMs: this.saveRetryMs },
        "could not save state.json (is the state dir full or read-only?); nginx keeps serving, applies go on, the save is retried",
      );
    this.saveError = error;
    this.saveFailingSince ??= this.clock.date().toISOString();
    const since = this.saveFailingSince;
    status.update(() => ({ persist: { ok: false, since, error } }));
    if (this.started)
      this.saveTimer = this.clock.setTimeout(() => {
        this.saveTimer = null;
        if (this.unsaved) this.save(this.unsaved);
      }, this.saveRetryMs);
  }

  private saveWorked(): void {
    const { status, log } = this.deps;
    this.saveRetryMs = 0;
    if (this.saveError !== null) log.info("state.json saved again");
    if (this.saveError !== null || status.get().persist === undefined)
      status.update(() => ({ persist: { ok: true, since: this.clock.date().toISOString() } }));
    this.saveError = null;
    this.saveFailingSince = null;
  }
}

/**
 * An error without the times and pids nginx's log lines carry: the same refusal retried is one distinct error, logged
 * once.
 */
const errorKey = (error: string) => error.replace(/\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: /g, "$1 ");

const seconds = (ms: number) => (ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`);

const round = (n: number) => Math.round(n * 10) / 10;
