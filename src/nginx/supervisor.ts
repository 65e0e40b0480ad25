import type { Logger } from "../shared/log.js";

/** What the supervisor restarts: an nginx master that can be started on its last good config and then probed. */
export interface Restartable {
  start(): Promise<void>;
  /** Learns what the new master serves (its config generation). */
  probe(): Promise<unknown>;
  readonly masterPid: number | null;
}

export interface SupervisorEvents {
  /** nginx died (or a restart failed): the status says so. */
  exited(why: string): void;
  /** A new master runs: apply the latest state to it. */
  restarted(): void;
}

/** Capped exponential backoff between restarts: quick after a one-off crash, no busy loop when nginx cannot start. */
export const RESTART_MIN_MS = 100;
export const RESTART_MAX_MS = 10_000;

export function nextRestartDelay(previous: number): number {
  return Math.min(Math.max(previous * 2, RESTART_MIN_MS), RESTART_MAX_MS);
}

/**
 * Restarts nginx on the last good config whenever it dies, with backoff, until stopped. The policy lives here rather
 * than in the composition root; timers come in so a test can drive it.
 */
export class NginxSupervisor {
  private delay = 0;
  private stopped = false;

  constructor(
    private readonly nginx: Restartable,
    private readonly log: Logger,
    private readonly events: SupervisorEvents,
    private readonly schedule: (fn: () => void, ms: number) => void = (fn, ms) => setTimeout(fn, ms).unref(),
  ) {}

  /** nginx exited unexpectedly (NginxProcess's onExit): report it and restart after the backoff. */
  exited(why: string): void {
    if (this.stopped) return;
    this.log.error({ why }, "nginx exited unexpectedly; restarting it on the last good config");
    this.events.exited(why);
    this.delay = nextRestartDelay(this.delay);
    this.schedule(() => void this.restart(), this.delay);
  }

  /** No restarts after this (shutdown). */
  stop(): void {
    this.stopped = true;
  }

  private async restart(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.nginx.start();
      await this.nginx.probe();
      this.log.info({ pid: this.nginx.masterPid }, "nginx restarted");
      this.delay = 0;
      this.events.restarted();
    } catch (e) {
      this.exited((e as Error).message);
    }
  }
}
