import type { Problem } from "../model/problem.js";
import type { Services, TlsInspector } from "../model/services.js";
import { shareServers } from "../model/share-servers.js";
import type { Logger } from "../shared/log.js";
import type { ServicesSource, Snapshot } from "./source.js";
import { nodeTlsInspector } from "../tls/inspect.js";
import { readBytesFile } from "./read-json.js";
import { readServicesFile, type ServicesRead } from "./services-text.js";
import { watchFile } from "./watch-file.js";

const ms = (x: number) => Math.round(x * 10) / 10;

/**
 * services.json: read at start, on `reload()` (SIGUSR2, the original contract with the config centre) and when the
 * file changes on disk. An invalid file is reported through `reject` and never emitted, so the last valid model stays.
 */
export class ServicesFileSource implements ServicesSource {
  readonly name = "services-file";
  private emitFn: ((s: Snapshot<Services>) => void) | null = null;
  private rejectFn: ((errors: readonly Problem[], warnings: readonly Problem[]) => void) | null = null;
  private last: Services | null = null;
  /** The last read was rejected: the next valid one is news even when it equals `last`. */
  private rejected = false;
  private reading: Promise<void> = Promise.resolve();
  /** The last read of the file, valid or not: the next read checks again only the servers whose text changed. */
  private lastRead: ServicesRead | null = null;

  constructor(
    readonly file: string,
    private readonly watch = true,
    private readonly log?: Logger,
    private readonly inspectTls: TlsInspector = nodeTlsInspector,
    /** How long a write in place must be quiet before the file is read (watchFile). */
    private readonly writerQuietMs = 50,
  ) {}

  /** Reads the file now and on every change until the signal aborts. */
  async start(
    signal: AbortSignal,
    emit: (s: Snapshot<Services>) => void,
    reject: (errors: readonly Problem[], warnings: readonly Problem[]) => void,
  ): Promise<void> {
    this.emitFn = emit;
    this.rejectFn = reject;
    if (this.watch)
      watchFile(
        this.file,
        () => void this.reload("file changed"),
        signal,
        this.writerQuietMs,
        () => this.whole("file replaced"),
      );
    await this.reload("start");
  }

  /**
   * Re-reads the file (serialised: a read never overtakes another). `asked`: an operator asked for this read
   * (SIGUSR2), so identical content is said at info level; the file watcher's re-reads of it are debug only.
   */
  reload(reason: string, asked = false): Promise<void> {
    this.reading = this.reading.then(async () => {
      await this.read(reason, asked);
    });
    return this.reading;
  }

  /**
   * Reads the file at once, as `reload` does, when it is whole and valid (resolves true); otherwise resolves false and
   * reports nothing: the file may be one still being written (see watchFile), and the read after its writer is done
   * reports what it holds then.
   */
  private whole(reason: string): Promise<boolean> {
    const read = this.reading.then(() => this.read(reason, false, true));
    this.reading = read.then(() => undefined);
    return read;
  }

  /** `tentative`: a read that fails reports nothing and leaves what the last read knew (see `whole`). */
  private async read(reason: string, asked = false, tentative = false): Promise<boolean> {
    const t0 = performance.now();
    const bytes = await readBytesFile(this.file);
    const t1 = performance.now();
    if (!bytes.ok) {
      if (tentative) return false;
      this.rejected = true;
      this.rejectFn?.(bytes.errors, bytes.warnings);
      return false;
    }
    const read = readServicesFile(bytes.value, this.lastRead, { inspectTls: this.inspectTls });
    const r = read.result;
    if (!r.ok && tentative) return false;
    this.lastRead = read;
    if (!r.ok) {
      this.rejected = true;
      this.rejectFn?.(r.errors, r.warnings);
      return false;
    }
    const t2 = performance.now();
    const value = shareServers(this.last, r.value);
    // A re-read of identical content is still reported (status shows when it was read), but reasons stay honest.
    const unchanged = value === this.last && !this.rejected;
    const origin = unchanged ? `${reason} (unchanged)` : reason;
    if (unchanged)
      this.log?.[asked ? "info" : "debug"]({ file: this.file, reason }, "services.json unchanged: nothing to apply");
    this.last = value;
    this.rejected = false;
    // Where a routing change's time goes before the reconciler sees it (bench/change-phases.ts reads this line).
    this.log?.debug(
      { reason, ms: { read: ms(t1 - t0), check: ms(t2 - t1), share: ms(performance.now() - t2) } },
      "services.json read",
    );
    this.emitFn?.({ value, warnings: r.warnings, connected: true, origin });
    return true;
  }
}
