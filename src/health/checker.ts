import type { BackendSet } from "../model/backends.js";
import type { Services } from "../model/services.js";
import type { Clock } from "../reconciler/clock.js";
import type { Logger } from "../shared/log.js";
import { checkTargets, type CheckTarget, type EndpointHealth, type Health } from "./targets.js";
import { initialHealth, nextHealth, type ProbeResult, type TargetHealth } from "./state.js";

/**
 * Active health checks run here, in the controller, rather than as timers inside nginx: the controller connects from
 * the same host and network namespace as nginx's upstream connections, so it sees what nginx would; one prober
 * serves every route (nginx timers run per worker and would need coordination through the shared dict to probe each
 * endpoint once); and it is plain TypeScript that tests drive with an injected clock and randomness.
 */
export interface CheckerDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** A number in [0, 1): spreads first probes over an interval and varies each next one by +-10%. */
  readonly random: () => number;
  readonly probe: (ip: string, port: number, check: CheckTarget["check"]) => Promise<ProbeResult>;
  /** Called with the whole new verdict map after any endpoint changes state (never per probe). */
  readonly onChange: (health: Health) => void;
  /** Probes in flight at most, fixed; the others wait their turn. Without it the cap follows the work (`probeCap`). */
  readonly concurrency?: number;
}

/** The fewest probes let in flight at once: small check sets do not need more, and fewer sockets wait on a slow host. */
export const MIN_CONCURRENCY = 64;
/**
 * The most probes in flight at once. A probe's timeout runs from its connect, so a probe in flight on a starved
 * controller (both cores busy) also times its wait for the event loop, while a probe waiting for a slot waits untimed:
 * past what the endpoints need, more in flight buys no probes and turns a late probe into a false failure. 256 carries
 * 5,000 probes a second at 50 ms each, and a few hundred hung endpoints at a time at their timeouts.
 */
export const MAX_CONCURRENCY = 256;

/**
 * How many probes in flight keep every endpoint probed on time even if each probe took its whole timeout: the sum of
 * timeout / interval over the targets (10,000 endpoints at 1 s of 2 s: 5,000), bounded by the two limits above.
 * Healthy endpoints answer in milliseconds and use a small part of it; the headroom is for the slow and the loaded box.
 */
export function probeCap(targets: Iterable<CheckTarget>): number {
  let due = 0;
  for (const t of targets) due += t.check.timeoutMs / t.check.intervalMs;
  return Math.min(MAX_CONCURRENCY, Math.max(MIN_CONCURRENCY, Math.ceil(due)));
}

interface Running {
  readonly target: CheckTarget;
  health: TargetHealth;
  timer: unknown;
  stopped: boolean;
}

/** Probes every distinct checked endpoint of the routes in force and publishes the verdicts when one changes. */
export class HealthChecker {
  private running = new Map<string, Running>();
  private lastInputs: { services: Services; backends: BackendSet } | null = null;
  private inFlight = 0;
  private cap = MIN_CONCURRENCY;
  private queue: (() => void)[] = [];
  /** The verdicts as they are now; `published` is the last copy handed out (a map nobody mutates). */
  private current = new Map<string, EndpointHealth>();
  private published: Health = new Map();
  private publishTimer: unknown = null;
  private stopped = false;

  constructor(private readonly deps: CheckerDeps) {}

  /** The current verdicts (a new map after each change). */
  get health(): Health {
    return this.published;
  }

  /** Probes what this routing model checks over this endpoint snapshot: new endpoints start, removed ones stop. */
  follow(services: Services, backends: BackendSet): void {
    if (this.stopped) return;
    const last = this.lastInputs;
    if (last && last.services === services && last.backends === backends) return;
    this.lastInputs = { services, backends };
    const wanted = checkTargets(services, backends);
    this.cap = this.deps.concurrency ?? probeCap(wanted.values());
    let dropped = false;
    for (const [key, r] of this.running)
      if (!wanted.has(key)) {
        this.halt(r);
        this.running.delete(key);
        dropped = this.current.delete(key) || dropped;
      }
    for (const [key, target] of wanted) {
      if (this.running.has(key)) continue;
      const r: Running = {
        target,
        health: initialHealth(this.deps.clock.date().getTime()),
        timer: null,
        stopped: false,
      };
      this.running.set(key, r);
      this.schedule(r, this.deps.random() * target.check.intervalMs);
    }
    if (dropped) this.publish();
  }

  /** How many distinct endpoints are probed. */
  get targets(): number {
    return this.running.size;
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.running.values()) this.halt(r);
    this.running.clear();
    this.queue = [];
    if (this.publishTimer !== null) this.deps.clock.clearTimeout(this.publishTimer);
    this.publishTimer = null;
  }

  private halt(r: Running): void {
    r.stopped = true;
    if (r.timer !== null) this.deps.clock.clearTimeout(r.timer);
    r.timer = null;
  }

  private schedule(r: Running, ms: number): void {
    r.timer = this.deps.clock.setTimeout(() => {
      r.timer = null;
      // A probe's own failures are results; anything else (a listener that throws) must not end this endpoint's checks
      // silently or escape as an unhandled rejection: say so and keep probing.
      this.run(r).catch((e: unknown) => {
        this.deps.log.error(
          { err: e instanceof Error ? e.message : String(e) },
          "health check failed (a bug in nginx-lb)",
        );
        if (!r.stopped && r.timer === null) this.schedule(r, r.target.check.intervalMs);
      });
    }, ms);
  }

  private async run(r: Running): Promise<void> {
    const start = this.deps.clock.now();
    await this.slot();
    try {
      if (r.stopped) return;
      let result: ProbeResult;
      try {
        result = await this.deps.probe(r.target.ip, r.target.port, r.target.check);
      } catch (e) {
        result = { ok: false, reason: `probe failed: ${e instanceof Error ? e.message : String(e)}` };
      }
      if (r.stopped) return;
      const before = r.health;
      r.health = nextHealth(before, result, r.target.check, this.deps.clock.date().getTime());
      if (r.health.state !== before.state) this.changed(r, before.state);
      // Probes start an interval apart however long each took (a hung endpoint's timeouts must not slow detection).
      const interval = r.target.check.intervalMs * (0.9 + 0.2 * this.deps.random());
      this.schedule(r, Math.max(0, interval - (this.deps.clock.now() - start)));
    } finally {
      this.release();
    }
  }

  private changed(r: Running, from: string): void {
    const { ip, port, check } = r.target;
    const h = r.health;
    if (h.state === "unknown") return;
    const endpoint = ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
    const fields = { endpoint, check: check.type === "http" ? `http ${check.path}` : "tcp", reason: h.reason, from };
    if (h.state === "down")
      this.deps.log.warn(
        fields,
        `endpoint down by health check: left out of its routes until ${check.healthy} probe(s) in a row pass; check the endpoint`,
      );
    else if (from === "down") this.deps.log.info(fields, "endpoint up again by health check: back in its routes");
    this.current.set(r.target.key, { state: h.state, since: new Date(h.since).toISOString(), reason: h.reason });
    this.publish();
  }

  /** Hands out one copy per burst of changes: the first probes of 10,000 endpoints publish a few times, not 10,000. */
  private publish(): void {
    if (this.publishTimer !== null || this.stopped) return;
    this.publishTimer = this.deps.clock.setTimeout(() => {
      this.publishTimer = null;
      this.published = new Map(this.current);
      // A timer callback: a throw here would end the controller. The verdicts stay current and go out next change.
      try {
        this.deps.onChange(this.published);
      } catch (e) {
        this.deps.log.error(
          { err: e instanceof Error ? e.message : String(e) },
          "health verdicts could not be handed on (a bug in nginx-lb); checks go on",
        );
      }
    }, 0);
  }

  private slot(): Promise<void> {
    if (this.inFlight < this.cap) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.queue.push(resolve));
  }

  private release(): void {
    // A cap lowered by follow() drains by not handing the slot on.
    const next = this.inFlight <= this.cap ? this.queue.shift() : undefined;
    if (next) next();
    else this.inFlight--;
  }
}
