/**
 * Writes the latest of a value some time after it was offered, one write at a time: what a new nginx master loads at
 * start (the start-up sets, routing table, certificates). Each of those files is the whole table, so writing it after
 * every push would put the whole table's encoding on the path of the next change; offered values that arrive while a
 * write waits or runs are coalesced, the latest wins. Each write is atomic (the caller's), so a crash leaves the
 * last written table, whole.
 */
export class LatestWriter<T> {
  private latest: T | null = null;
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  /** The value the file holds (the last successful write), so offering it again writes nothing. */
  private onDisk: T | null = null;

  /**
   * `write` resolves true when the value is on disk and must not throw (it reports failures itself); `delayMs`: how
   * long an offered value waits at most.
   */
  constructor(
    private readonly write: (value: T) => Promise<boolean>,
    private readonly delayMs: number,
  ) {}

  /**
   * Keeps `value` to be written: within `delayMs`, or right after the write in flight; `now`: without the wait (a
   * value nothing written before stands in for, as after a start).
   */
  offer(value: T, now = false): void {
    if (value === this.onDisk && this.latest === null && this.writing === null) return;
    this.latest = value;
    if (now && this.timer !== null) clearTimeout(this.timer);
    if (now) this.run();
    else if (this.timer === null && this.writing === null) this.timer = setTimeout(() => this.run(), this.delayMs);
  }

  /** Says `value` was written by other means (wait for `flush` first, so no older write lands after it). */
  written(value: T): void {
    this.onDisk = value;
  }

  /** Writes what waits now and resolves once nothing waits or runs (for shutdown and tests). */
  async flush(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.run();
    }
    while (this.writing !== null) await this.writing;
  }

  private run(): void {
    this.timer = null;
    this.writing ??= this.loop().finally(() => {
      this.writing = null;
    });
  }

  private async loop(): Promise<void> {
    for (let v = this.latest; v !== null; v = this.latest) {
      this.latest = null;
      // A bug in `write` must not escape a timer: the next offer tries again.
      const ok = await this.write(v).catch(() => false);
      this.onDisk = ok ? v : null;
    }
  }
}
