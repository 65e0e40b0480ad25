import { copyFile, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { plan, type EndpointSets } from "../model/plan.js";
import type { Rendered } from "../render/index.js";
import type { Logger } from "../shared/log.js";
import { nginxTest } from "./binary.js";
import { fetchGeneration, waitForGeneration } from "./control.js";
import { syncEndpoints, type PushedState } from "./endpoints-push.js";
import { prepareStateDir, writeFileAtomic, writeRenderedFiles } from "./files.js";
import { waitWorkersRetired, workerPids, type NginxPaths, type NginxProcess } from "./process.js";

/** What nginx should serve: the rendered config and, in dynamic endpoints mode, the sets to push (else null). */
export interface Target {
  readonly rendered: Rendered;
  readonly endpoints: EndpointSets | null;
}

/** What one apply did and how long each step took. */
export interface ApplyOutcome {
  readonly result: "unchanged" | "applied" | "failed";
  /** `push`: endpoint sets sent to nginx without a reload (dynamic mode). */
  readonly action: "none" | "reload" | "start" | "push";
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
  /** The sets nginx holds and the master they were pushed to; a different master (restart) holds none. */
  private pushed: { state: PushedState; master: number } | null = null;
  private version = Date.now();

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

  /** The version of the endpoint sets nginx was last confirmed to hold (dynamic mode), or null. */
  get pushedVersion(): number | null {
    return this.pushed?.master === this.nginx.masterPid ? (this.pushed?.state.version ?? null) : null;
  }

  /**
   * Makes nginx serve the target with the cheapest action `plan` allows: nothing, a push of endpoint sets (dynamic
   * mode), or test + swap + reload (then a push). `force` reloads even an unchanged config.
   */
  async apply(target: Target, force = false): Promise<ApplyOutcome> {
    const started = performance.now();
    const { rendered, endpoints } = target;
    const master = this.nginx.masterPid;
    const mode = endpoints ? "dynamic" : "reload";
    const pushed = this.pushed?.master === master ? this.pushed.state : null;
    const running =
      master === null || this.live === null
        ? null
        : ({ mode, generation: this.live, endpoints: pushed?.sets ?? null } as const);
    const action = force ? "reload" : plan(running, { mode, generation: rendered.generation, endpoints });
    if (action === "none")
      return {
        result: "unchanged",
        action: "none",
        generation: rendered.generation,
        ms: { test: 0, reload: 0, total: performance.now() - started },
      };
    if (action === "dynamic" && endpoints) return this.push(rendered.generation, endpoints, started, 0, 0);
    const out = await this.reload(rendered, force, started);
    if (out.result !== "applied" || !endpoints) return out;
    // The shared dict survives a reload but not a start; a whole push after either is always right.
    const after = await this.push(rendered.generation, endpoints, started, out.ms.test, out.ms.reload, true);
    return after.result === "applied" ? { ...out, ms: after.ms } : { ...after, action: out.action };
  }

  private async push(
    generation: string,
    endpoints: EndpointSets,
    started: number,
    test: number,
    reloadMs: number,
    whole = false,
  ): Promise<ApplyOutcome> {
    const master = this.nginx.masterPid;
    const known = !whole && this.pushed?.master === master ? this.pushed.state : null;
    const t = performance.now();
    try {
      const state = await syncEndpoints({ port: this.controlPort }, known, endpoints, ++this.version);
      this.pushed = master === null ? null : { state, master };
      return {
        result: "applied",
        action: "push",
        generation,
        ms: { test, reload: reloadMs + performance.now() - t, total: performance.now() - started },
      };
    } catch (e) {
      this.pushed = null;
      return {
        result: "failed",
        action: "push",
        generation,
        error: `pushing endpoint sets to nginx failed: ${(e as Error).message}`,
        ms: { test, reload: reloadMs + performance.now() - t, total: performance.now() - started },
      };
    }
  }

  /** Test, swap, reload (or start), confirm; restores the last good file on failure. */
  private async reload(rendered: Rendered, force: boolean, started: number): Promise<ApplyOutcome> {
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
