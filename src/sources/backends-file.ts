import type { BackendSet } from "../model/backends.js";
import { formatProblem, type Problem } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import { loadBackendsFile } from "./services-file.js";
import type { EndpointSource, Snapshot } from "./source.js";
import { watchFile } from "./watch-file.js";

/** The embedded registry: a JSON file `{ "<app>-<service>": { "<ip>": { "weight": 50 } } }`, watched for changes. */
export class BackendsFileSource implements EndpointSource {
  readonly name = "backends-file";
  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {}

  /**
   * Emits the file's endpoint set now and after every valid change; an invalid file keeps the last set and goes to
   * `reject` (status, metrics and dashboard show it), besides the log.
   */
  async start(
    signal: AbortSignal,
    emit: (s: Snapshot<BackendSet>) => void,
    reject: (errors: readonly Problem[], warnings: readonly Problem[]) => void = () => undefined,
  ): Promise<void> {
    const read = async (why: string) => {
      const r = await loadBackendsFile(this.file);
      if (!r.ok) {
        this.log.error(
          { file: this.file, errors: r.errors.map(formatProblem) },
          "backends file is invalid; the endpoints in force stay until it is fixed",
        );
        reject(r.errors, r.warnings);
        return;
      }
      emit({ value: r.value, warnings: r.warnings, connected: true, origin: `${this.file} (${why})` });
    };
    // Serialised: a slow read of older content must never emit after a newer one and leave stale endpoints.
    let reading = Promise.resolve();
    const next = (why: string) => (reading = reading.then(() => read(why)));
    watchFile(this.file, () => void next("changed"), signal);
    await next("start");
  }
}
