import type { Clock } from "../reconciler/clock.js";
import type { Logger } from "../shared/log.js";
import { formatProblem } from "../model/problem.js";
import {
  currentEjections,
  ejectionChanges,
  NO_EJECTIONS,
  parseEjections,
  type EjectionChange,
  type Ejections,
} from "./ejections.js";

export interface EjectionWatchDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** One read of nginx's ejection records (GET /nginx-lb/ejections): the body, or why it failed. */
  readonly read: () => Promise<{ ok: true; text: string } | { ok: false; why: string }>;
  /** The route label of an upstream, for the log (undefined when no route has it any more). */
  readonly routeOf: (upstream: string) => string | undefined;
  /** Called with the whole new map when an endpoint is ejected or returns (never per read). */
  readonly onChange: (ejections: Ejections) => void;
  /** Between reads. Default 1,000 ms. */
  readonly intervalMs?: number;
}

/**
 * Reads nginx's outlier ejections once a second (dynamic mode) and hands on the per-endpoint states when they change,
 * logging each ejection and each return once. A failed read (nginx restarting) keeps the last states and is logged
 * once, as is the first read that works again.
 */
export class EjectionWatch {
  private current: Ejections = NO_EJECTIONS;
  private timer: unknown = null;
  private stopped = false;
  private failing: string | null = null;

  constructor(private readonly deps: EjectionWatchDeps) {}

  get ejections(): Ejections {
    return this.current;
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = null;
      // A timer callback: nothing may escape it (a throw would end the controller); the next read goes on.
      this.readOnce()
        .catch((e: unknown) =>
          this.deps.log.error(
            { err: e instanceof Error ? e.message : String(e) },
            "reading outlier ejections failed (a bug in nginx-lb)",
          ),
        )
        .finally(() => this.schedule());
    }, this.deps.intervalMs ?? 1000);
  }

  /** One read: parses, compares, logs and hands on what changed. */
  async readOnce(): Promise<void> {
    const got = await this.deps.read();
    if (this.stopped) return;
    if (!got.ok) return this.failed(got.why);
    const parsed = parseEjections(got.text);
    if (!parsed.ok)
      return this.failed(`nginx answered an invalid state: ${parsed.errors.map(formatProblem).join("; ")}`);
    if (this.failing !== null) this.deps.log.info("outlier ejections readable again");
    this.failing = null;
    const next = currentEjections(parsed.value);
    const changes = ejectionChanges(this.current, next);
    if (changes.length === 0) return;
    this.current = next;
    for (const c of changes) this.logChange(c);
    this.deps.onChange(next);
  }

  private failed(why: string): void {
    if (this.failing === null)
      this.deps.log.warn(
        { err: why },
        "cannot read outlier ejections from nginx: the status keeps the last known ones (retried every second)",
      );
    this.failing = why;
  }

  private logChange(c: EjectionChange): void {
    const fields = {
      route: this.deps.routeOf(c.upstream) ?? c.upstream,
      endpoint: c.endpoint,
      reason: c.ejection.reason,
      since: c.ejection.since,
      until: c.ejection.until,
    };
    if (c.kind === "ejected")
      this.deps.log.warn(
        fields,
        "endpoint ejected by traffic: every nginx worker skips it until the back-off ends; check the endpoint",
      );
    else this.deps.log.info(fields, "endpoint back from ejection: in rotation again, its next request decides");
  }
}
