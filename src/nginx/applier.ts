import { copyFile, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Rendered } from "../render/index.js";
import type { Logger } from "../shared/log.js";
import { nginxTest } from "./binary.js";
import { fetchGeneration, waitForGeneration } from "./control.js";
import { prepareStateDir, writeFileAtomic, writeRenderedFiles } from "./files.js";
import { waitWorkersRetired, workerPids, type NginxPaths, type NginxProcess } from "./process.js";

/** What one apply did and how long each step took. */
export interface ApplyOutcome {
  readonly result: "unchanged" | "applied" | "failed";
  readonly action: "none" | "reload" | "start";
  readonly generation: string;
  readonly error?: string;
  readonly ms: { readonly test: number; readonly reload: number; readonly total: number };
}

/**
 * The only code that writes nginx.conf or signals nginx. A candidate is tested with `nginx -t`, swapped in by
 * rename, reloaded, and confirmed by asking nginx which generation it serves; on any failure the last good file
 * goes back, so a later nginx restart also comes up on a good config.
 */
export class NginxApplier {
  private live: string | null = null;
  private liveFiles = new Set<string>();

  constructor(
    private readonly paths: NginxPaths,
    private readonly nginx: NginxProcess,
    private readonly controlPort: number,
    private readonly log: Logger,
    private readonly confirmTimeoutMs = 5_000,
  ) {}

  /** The generation nginx was last confirmed to serve. */
  get liveGeneration(): string | null {
    return this.live;
  }

  /** Learns what an adopted nginx serves, so an unchanged config is not reloaded after a controller restart. */
  async probe(): Promise<string | null> {
    this.live = await fetchGeneration(this.controlPort, 1000);
    return this.live;
  }

  /** Tests, swaps in, and makes live a rendered config; `force` reloads even when it is unchanged. */
  async apply(rendered: Rendered, force = false): Promise<ApplyOutcome> {
    const started = performance.now();
    const running = this.nginx.masterPid !== null;
    const ms = (test: number, reload: number) => ({ test, reload, total: performance.now() - started });
    if (running && !force && rendered.generation === this.live)
      return { result: "unchanged", action: "none", generation: rendered.generation, ms: ms(0, 0) };

    const { dir, conf } = this.paths;
    await prepareStateDir(dir);
    await writeRenderedFiles(dir, rendered);
    const candidate = `${conf}.candidate`;
    await writeFileAtomic(candidate, rendered.conf);
    const test = await nginxTest(this.paths.nginx, candidate, dir);
    const action = running ? "reload" : "start";
    if (!test.ok) {
      await rm(candidate, { force: true });
      return {
        result: "failed",
        action,
        generation: rendered.generation,
        error: `nginx -t rejected the new config: ${test.output}`,
        ms: ms(test.ms, 0),
      };
    }

    const lastGood = `${conf}.last-good`;
    const hadConf = await exists(conf);
    if (hadConf) await copyFile(conf, lastGood);
    await rename(candidate, conf);
    const errorLog = join(dir, "logs/error.log");
    const logOffset = await sizeOf(errorLog);
    const reloadStarted = performance.now();
    let error: string | undefined;
    try {
      const oldWorkers = running ? await workerPids(this.nginx.masterPid ?? 0) : [];
      if (running) this.nginx.reload();
      else await this.nginx.start();
      if (!(await waitForGeneration(this.controlPort, rendered.generation, this.confirmTimeoutMs)))
        error = `nginx did not take the new config within ${this.confirmTimeoutMs} ms: ${await tail(errorLog, logOffset)}`;
      // Live means every accepting worker runs the new config: old workers accept for a while after a reload.
      else if (!(await waitWorkersRetired(oldWorkers, this.confirmTimeoutMs)))
        this.log.warn({ oldWorkers }, "old nginx workers still accept connections after the reload");
    } catch (e) {
      error = (e as Error).message;
    }
    const reloadMs = performance.now() - reloadStarted;
    if (error !== undefined) {
      if (hadConf) await rename(lastGood, conf);
      this.log.warn({ error }, "restored the last good nginx.conf");
      return { result: "failed", action, generation: rendered.generation, error, ms: ms(test.ms, reloadMs) };
    }
    this.live = rendered.generation;
    await this.pruneFiles(rendered);
    return { result: "applied", action, generation: rendered.generation, ms: ms(test.ms, reloadMs) };
  }

  /** Deletes TLS files that neither the live nor the previous config references. */
  private async pruneFiles(rendered: Rendered): Promise<void> {
    const keep = new Set([...this.liveFiles, ...rendered.files.map((f) => f.path)]);
    this.liveFiles = new Set(rendered.files.map((f) => f.path));
    try {
      for (const name of await readdir(join(this.paths.dir, "tls")))
        if (!keep.has(`tls/${name}`)) await rm(join(this.paths.dir, "tls", name), { force: true });
    } catch {
      // Nothing to prune.
    }
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function sizeOf(file: string): Promise<number> {
  return stat(file).then(
    (s) => s.size,
    () => 0,
  );
}

/** What nginx logged since an offset: the reason a reload did not take (e.g. a port held by another process). */
async function tail(file: string, from: number): Promise<string> {
  try {
    const fh = await open(file, "r");
    try {
      const buf = Buffer.alloc(8192);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      const lines = buf
        .subarray(0, bytesRead)
        .toString("utf8")
        .split("\n")
        .filter((l) => /\[(emerg|alert|crit|error)\]/.test(l));
      return lines.slice(-3).join(" | ") || "no error was logged";
    } finally {
      await fh.close();
    }
  } catch {
    return "no error log";
  }
}
