import { copyFile, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { plan, type EndpointSets, type RouteTable } from "../model/plan.js";
import type { Applier, ApplyOutcome, NginxState } from "../reconciler/applier.js";
import type { Target } from "../reconciler/target.js";
import type { Rendered } from "../render/index.js";
import { writeFileAtomic } from "../shared/files.js";
import type { Logger } from "../shared/log.js";
import { nginxTest } from "./binary.js";
import { pushedCertsVersion, syncCerts, writeInitialCerts, type CertTable, type PushedCerts } from "./certs-push.js";
import { fetchGeneration, waitForGeneration } from "./control.js";
import { pushedVersion, syncEndpoints, type PushedState, type PushTarget } from "./endpoints-push.js";
import { prepareStateDir, writeRenderedFiles } from "./files.js";
import { writeInitialRoutes } from "./initial-routes.js";
import { writeInitialSets } from "./initial-sets.js";
import { LatestWriter } from "./latest-writer.js";
import { newPortsFirst } from "./new-ports.js";
import type { EncodedSets } from "./push-format.js";
import { bindFailures, summariseNginxError } from "./nginx-errors.js";
import { describeHolder, findPortHolder } from "./port-holder.js";
import { pushedRoutesVersion, syncRoutes, type PushedRoutes } from "./routes-push.js";
import { waitWorkersRetired, workerPids, type NginxPaths, type NginxProcess } from "./process.js";

/**
 * How long a pushed table waits before it is written for the next nginx master: pushes within it are written once.
 * Until then a master that starts (after a crash of nginx) loads the table written before, and the next push sends it
 * the latest.
 */
const STARTUP_WRITE_DELAY_MS = 1000;

/** What one push sends: the sets (and which changed), the routing table (and which servers), the certificates. */
interface PushWork {
  readonly endpoints: EndpointSets;
  readonly changed: readonly string[] | "all";
  readonly routeTable: RouteTable | null;
  readonly changedRoutes: readonly string[] | "all";
  /** Pushed certificates (dynamic routes mode), whole: syncCerts sends what differs from what nginx holds. */
  readonly certs: CertTable | null;
}

/** What a new master was given in the state dir's start-up files before it started (each part that was written). */
interface Preloaded {
  readonly sets: PushedState | null;
  readonly routes: PushedRoutes | null;
  readonly certs: PushedCerts | null;
}

/**
 * The only code that writes nginx.conf or signals nginx. A candidate is tested with `nginx -t`, swapped in by
 * rename, reloaded, and confirmed by asking nginx which generation it serves; on any failure the last good file
 * goes back, so a later nginx restart also comes up on a good config. Every failure, file I/O included (a full or
 * read-only state dir), comes back as a `failed` outcome.
 */
export class NginxApplier implements Applier {
  private live: string | null = null;
  private liveFiles = new Set<string>();
  /** The sets nginx holds and the master they were pushed to; a different master (restart) holds none. */
  private pushed: { state: PushedState; master: number } | null = null;
  private version = Date.now();
  /** The sets to write for the next nginx master to start with (the latest pushed), and the last write's error. */
  private readonly setsFile = this.startupFile<PushedState>(
    (s) => writeInitialSets(this.paths.dir, s.version, s.sets, this.encodedSets),
    "could not keep the endpoint sets for an nginx restart; a restarted nginx answers 503 until the next push",
  );
  /** Each written set's encoding, by list: the start-up file is rewritten after every push, mostly of the same lists. */
  private readonly encodedSets: EncodedSets = new WeakMap();
  /** Dynamic routes mode: the table nginx holds and the master it was pushed to. */
  private pushedRoutes: { state: PushedRoutes; master: number } | null = null;
  private readonly routesFile = this.startupFile<PushedRoutes>(
    (s) => writeInitialRoutes(this.paths.dir, s.version, s.table),
    "could not keep the routing table for an nginx restart; a restarted nginx answers 404 until the next push",
  );
  /** Pushed certificates (dynamic routes mode): what nginx holds and the master it was pushed to. */
  private pushedCerts: { state: PushedCerts; master: number } | null = null;
  /** The file holds private keys (0600, writeInitialCerts); a warning names the file, never its content. */
  private readonly certsFile = this.startupFile<PushedCerts>(
    (s) => writeInitialCerts(this.paths.dir, s),
    "could not keep the certificates for an nginx restart; a restarted nginx refuses TLS until the next push",
  );

  constructor(
    private readonly paths: NginxPaths,
    private readonly nginx: NginxProcess,
    private readonly controlPort: number,
    private readonly log: Logger,
    /** The secret endpoint pushes carry (dynamic mode). */
    private readonly pushToken?: string,
    private readonly confirmTimeoutMs = 5_000,
  ) {}

  /** Aborted when the controller stops: a wait for nginx to take a config ends at once instead of timing out. */
  private readonly stopping = new AbortController();

  /**
   * Ends any wait for a new master to take its config, now and later. A stop asked for while a large config loads (up
   * to a minute) must not wait it out: an orchestrator kills a controller that ignores its SIGTERM.
   */
  stop(): void {
    this.stopping.abort();
  }

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

  /** What nginx runs now, for the status. */
  state(): NginxState {
    return {
      running: this.nginx.masterPid !== null,
      pid: this.nginx.masterPid,
      generation: this.live,
      pushedVersion: this.pushedVersion,
    };
  }

  /**
   * Makes nginx serve the target with the cheapest action `plan` allows: nothing, a push of the changed endpoint sets
   * (dynamic mode), or test + swap + reload (then a whole push). `force` reloads even an unchanged config.
   */
  async apply(target: Target, force = false): Promise<ApplyOutcome> {
    const started = performance.now();
    const { rendered, endpoints, mode, routeTable, certs } = target;
    const master = this.nginx.masterPid;
    const pushed = this.pushed?.master === master ? this.pushed.state : null;
    const pushedRoutes = this.pushedRoutes?.master === master ? this.pushedRoutes.state : null;
    const pushedCerts = this.pushedCerts?.master === master ? this.pushedCerts.state : null;
    const running =
      master === null || this.live === null
        ? null
        : ({
            mode,
            generation: this.live,
            endpoints: pushed?.sets ?? null,
            routes: pushedRoutes?.table ?? null,
            certs: pushedCerts?.table ?? null,
          } as const);
    const decision = plan(
      running,
      {
        mode,
        generation: rendered.generation,
        endpoints,
        routes: routeTable,
        certs,
        endpointsDelta: target.endpointsDelta,
        routesDelta: target.routesDelta,
      },
      force,
    );
    if (decision.action === "none")
      return {
        result: "unchanged",
        action: "none",
        generation: rendered.generation,
        ms: { test: 0, reload: 0, total: performance.now() - started },
      };
    if (decision.action === "push" && endpoints)
      return this.push(
        rendered.generation,
        { endpoints, changed: decision.upstreams, routeTable, changedRoutes: decision.routes ?? "all", certs },
        started,
        0,
        0,
      );
    // A master about to start loads the start-up files in init_by_lua, before its workers exist: written with the
    // target first, they make it serve everything from its first request, and the pushes after the start find it
    // holding them already (parsed once by the master, not sent and parsed again in a worker).
    const preloaded = master === null && endpoints ? await this.preload(endpoints, routeTable, certs) : null;
    if (routeTable && endpoints) await this.pushNewPortsFirst(master, endpoints, routeTable, certs);
    const out = await this.reload(rendered, started);
    if (out.result !== "applied" || !endpoints) return out;
    const held = preloaded ? await this.adopt(preloaded) : { sets: false, routes: false };
    // The shared dicts survive a reload but not a start; a whole push after either is always right, unless the new
    // master holds the start-up files' versions, which it loaded from what this target wrote. Certificates go whole
    // only to a new master (a partial push to the same master after a reload: a whole one can be ~75 MB).
    const after = await this.push(
      rendered.generation,
      { endpoints, changed: held.sets ? [] : "all", routeTable, changedRoutes: held.routes ? [] : "all", certs },
      started,
      out.ms.test,
      out.ms.reload,
    );
    // A failed push keeps action "push", so the reconciler retries it with backoff (the reload itself took).
    return after.result === "applied" ? { ...out, ms: after.ms } : after;
  }

  /**
   * Writes the target's sets, table and certificates as the start-up files, under new versions, for the master about
   * to start. Waits for any write of an older push first, so none replaces these. A part that cannot be written is
   * null (the old file stays; the master loads that, holds another version, and gets the whole push as before).
   */
  private async preload(
    endpoints: EndpointSets,
    routeTable: RouteTable | null,
    certs: CertTable | null,
  ): Promise<Preloaded> {
    await this.settled();
    const sets = { version: ++this.version, sets: endpoints };
    const routes = routeTable ? { version: ++this.version, table: routeTable } : null;
    const pushedCerts = certs ? { version: ++this.version, table: certs } : null;
    const [setsOut, routesOut, certsOut] = await Promise.all([
      writeInitialSets(this.paths.dir, sets.version, sets.sets, this.encodedSets),
      routes ? writeInitialRoutes(this.paths.dir, routes.version, routes.table) : null,
      pushedCerts ? writeInitialCerts(this.paths.dir, pushedCerts) : null,
    ]);
    if (setsOut.ok) this.setsFile.written(sets);
    if (routes && routesOut?.ok) this.routesFile.written(routes);
    if (pushedCerts && certsOut?.ok) this.certsFile.written(pushedCerts);
    return {
      sets: setsOut.ok ? sets : null,
      routes: routesOut?.ok ? routes : null,
      certs: certsOut?.ok ? pushedCerts : null,
    };
  }

  /**
   * After a start: each part the new master reports holding at the version `preload` wrote is what nginx holds (the
   * versions are this controller's own and unique to that write), so no push resends it. A part it holds at another
   * version (a file it refused, or one it did not load) or a failed question leaves that part unknown: pushed whole.
   */
  private async adopt(pre: Preloaded): Promise<{ sets: boolean; routes: boolean }> {
    const master = this.nginx.masterPid;
    if (master === null) return { sets: false, routes: false };
    const target = this.pushTarget();
    const held = async (part: PushedState | PushedRoutes | PushedCerts | null, ask: typeof pushedVersion) =>
      part !== null && (await ask(target).catch(() => null)) === part.version;
    const [sets, routes, certs] = await Promise.all([
      held(pre.sets, pushedVersion),
      held(pre.routes, pushedRoutesVersion),
      held(pre.certs, pushedCertsVersion),
    ]);
    if (sets && pre.sets) this.pushed = { state: pre.sets, master };
    if (routes && pre.routes) this.pushedRoutes = { state: pre.routes, master };
    if (certs && pre.certs) this.pushedCerts = { state: pre.certs, master };
    return { sets, routes };
  }

  private pushTarget(): PushTarget {
    return { port: this.controlPort, ...(this.pushToken ? { token: this.pushToken } : {}) };
  }

  /**
   * Routes pushed, before a reload: the servers, sets and certificates of ports the reload opens (newPortsFirst), so
   * a new port serves its sites from its first request. Best effort: the whole push after the reload sends them
   * anyway, so a failure here only costs that port's first requests.
   */
  private async pushNewPortsFirst(
    master: number | null,
    endpoints: EndpointSets,
    routeTable: RouteTable,
    certs: CertTable | null,
  ): Promise<void> {
    const routes = this.pushedRoutes?.master === master ? this.pushedRoutes.state : null;
    const sets = this.pushed?.master === master ? this.pushed.state : null;
    const held = this.pushedCerts?.master === master ? this.pushedCerts.state : null;
    if (master === null || routes === null || sets === null) return;
    const first = newPortsFirst(
      { routes: routes.table, certs: held?.table ?? null, sets: sets.sets },
      { routes: routeTable, certs, sets: endpoints },
    );
    if (first === null) return;
    const target = this.pushTarget();
    try {
      const state = await syncEndpoints(target, sets, first.sets, first.upstreams, ++this.version);
      this.pushed = { state, master };
      if (first.certs !== null && held !== null)
        this.pushedCerts = { state: await syncCerts(target, held, first.certs, ++this.version), master };
      this.pushedRoutes = {
        state: await syncRoutes(target, routes, first.routes, first.added, ++this.version),
        master,
      };
    } catch (e) {
      this.pushed = null;
      this.pushedCerts = null;
      this.pushedRoutes = null;
      this.log.warn(
        { err: (e as Error).message },
        "pushing a new port's sites before the reload failed: they are pushed after it (its first requests may get 404)",
      );
    }
  }

  private async push(
    generation: string,
    work: PushWork,
    started: number,
    test: number,
    reloadMs: number,
  ): Promise<ApplyOutcome> {
    const { endpoints, changed, routeTable, changedRoutes, certs } = work;
    const master = this.nginx.masterPid;
    const known = changed !== "all" && this.pushed?.master === master ? this.pushed.state : null;
    const t = performance.now();
    let what = "endpoint sets";
    try {
      const target = this.pushTarget();
      // Sets of new routes go before the table names them; sets of removed routes go after the table stops naming
      // them, so no request in between finds its route without a set (503).
      const gone = routeTable && changed !== "all" ? changed.filter((n) => !endpoints.has(n)) : [];
      const first = gone.length > 0 && changed !== "all" ? changed.filter((n) => endpoints.has(n)) : changed;
      let state = await syncEndpoints(target, known, endpoints, first, ++this.version);
      this.pushed = master === null ? null : { state, master };
      // Certificates before the table: a new TLS site's handshakes work by the time a route names it.
      if (certs) {
        what = "certificates";
        const knownCerts = this.pushedCerts?.master === master ? this.pushedCerts.state : null;
        const held = await syncCerts(target, knownCerts, certs, ++this.version);
        this.pushedCerts = master === null ? null : { state: held, master };
        if (held !== knownCerts) this.certsFile.offer(held, knownCerts === null);
      }
      if (routeTable) {
        what = "the routing table";
        const knownRoutes =
          changedRoutes !== "all" && this.pushedRoutes?.master === master ? this.pushedRoutes.state : null;
        const routes = await syncRoutes(target, knownRoutes, routeTable, changedRoutes, ++this.version);
        this.pushedRoutes = master === null ? null : { state: routes, master };
        this.routesFile.offer(routes, changedRoutes === "all");
        if (gone.length > 0) {
          what = "endpoint sets";
          state = await syncEndpoints(target, state, endpoints, gone, ++this.version);
          this.pushed = master === null ? null : { state, master };
        }
      }
      this.setsFile.offer(state, changed === "all");
      return {
        result: "applied",
        action: "push",
        generation,
        ms: { test, reload: reloadMs + performance.now() - t, total: performance.now() - started },
      };
    } catch (e) {
      if (what === "endpoint sets") this.pushed = null;
      if (what === "certificates") this.pushedCerts = null;
      this.pushedRoutes = null;
      return {
        result: "failed",
        action: "push",
        generation,
        error: `pushing ${what} to nginx failed: ${(e as Error).message}`,
        retry: true,
        ms: { test, reload: reloadMs + performance.now() - t, total: performance.now() - started },
      };
    }
  }

  /**
   * Keeps what nginx now holds in a state-dir file a new master loads at start (a crash then serves the last known
   * sets, table or certificates instead of 503/404 until the next push). Off the apply path and coalesced
   * (LatestWriter): with 10,000 routes an encoding + write + fsync per push would delay the next change; the latest
   * wins, a whole push (after a start or a reload) at once. A failure is logged once per distinct error and never fails
   * the push that nginx already took.
   */
  private startupFile<T>(
    write: (value: T) => Promise<{ ok: true } | { ok: false; path: string; error: string }>,
    warning: string,
  ): LatestWriter<T> {
    let lastError: string | null = null;
    return new LatestWriter<T>(async (value) => {
      const out = await write(value);
      const error = out.ok ? null : out.error;
      if (!out.ok && error !== lastError) this.log.warn({ file: out.path, error }, warning);
      lastError = error;
      return out.ok;
    }, STARTUP_WRITE_DELAY_MS);
  }

  /** Writes the last pushed sets, table and certificates now and resolves once they are on disk (or failed). */
  async settled(): Promise<void> {
    await Promise.all([this.setsFile.flush(), this.routesFile.flush(), this.certsFile.flush()]);
  }

  /** Test, swap, reload (or start), confirm; restores the last good file on failure. Never throws. */
  private async reload(rendered: Rendered, started: number): Promise<ApplyOutcome> {
    const running = this.nginx.masterPid !== null;
    const action = running ? "reload" : "start";
    const { dir, conf } = this.paths;
    const candidate = `${conf}.candidate`;
    const lastGood = `${conf}.last-good`;
    let testMs = 0;
    let reloadMs = 0;
    let swapped = false;
    let hadConf = false;
    let cutShort = false;
    let error: string | undefined;
    // Which step a thrown error comes from, so the status says what to fix ("writing the candidate: ENOSPC ...").
    let step = "preparing the state dir";
    try {
      await prepareStateDir(dir);
      step = "writing the config's files";
      await writeRenderedFiles(dir, rendered);
      step = "writing the candidate nginx.conf";
      await writeFileAtomic(candidate, rendered.conf);
      step = "testing the candidate (nginx -t)";
      const test = await nginxTest(this.paths.nginx, candidate, dir);
      testMs = test.ms;
      if (!test.ok) {
        await rm(candidate, { force: true }).catch(() => undefined);
        return {
          result: "failed",
          action,
          generation: rendered.generation,
          error: `nginx -t rejected the new config: ${await explain(test.output)}`,
          ms: { test: testMs, reload: 0, total: performance.now() - started },
        };
      }
      step = "keeping the last good nginx.conf";
      hadConf = await exists(conf);
      if (hadConf) await copyFile(conf, lastGood);
      step = "swapping in the new nginx.conf";
      await rename(candidate, conf);
      swapped = true;
      step = running ? "reloading nginx" : "starting nginx";
      const errorLog = join(dir, "logs/error.log");
      const logOffset = await sizeOf(errorLog);
      const reloadStarted = performance.now();
      const gaveUp = new AbortController();
      try {
        const oldWorkers = running ? await workerPids(this.nginx.masterPid ?? 0) : [];
        if (running) this.nginx.reload();
        else await this.nginx.start();
        // A new master serves nothing until it answers, and loading 10,000 sites can take it longer than a reload is
        // given on a busy machine: it is waited for while it lives. Given up on, it would be retried as a reload of a
        // master still loading, which starts the load over. A master that exits or refuses ends the wait at once.
        const confirmMs = running ? this.confirmTimeoutMs : Math.max(this.confirmTimeoutMs, START_CONFIRM_MS);
        const taken = await Promise.race([
          waitForGeneration(this.controlPort, rendered.generation, confirmMs, gaveUp.signal),
          refusal(errorLog, logOffset, confirmMs, gaveUp.signal),
          // A reload is waited for (it is short, and the files on disk must say what the master loads).
          ...(running
            ? []
            : [
                exitedWhileStarting(this.nginx, errorLog, logOffset, gaveUp.signal),
                aborted(this.stopping.signal, gaveUp.signal),
              ]),
        ]);
        gaveUp.abort();
        cutShort = taken === STOPPING;
        if (cutShort) error = "the controller is stopping: nginx's start was not waited for (nginx is stopped next)";
        else if (taken !== true)
          error =
            typeof taken === "string"
              ? `nginx refused the new config: ${await explain(taken)}`
              : `nginx did not take the new config within ${confirmMs} ms: ${await explain(await tail(errorLog, logOffset))}`;
        // Live means every accepting worker runs the new config: old workers accept for a while after a reload.
        else if (!(await waitWorkersRetired(oldWorkers, this.confirmTimeoutMs)))
          this.log.warn({ oldWorkers }, "old nginx workers still accept connections after the reload");
      } finally {
        gaveUp.abort();
        reloadMs = performance.now() - reloadStarted;
      }
    } catch (e) {
      error = `${step}: ${await explain((e as Error).message)}`;
    }
    const ms = { test: testMs, reload: reloadMs, total: performance.now() - started };
    if (error !== undefined) {
      // A state-dir failure (before nginx was signalled) or a failed start may heal by itself; a config a running
      // nginx did not take waits for the next change.
      const retry = !swapped || !running;
      if (!swapped) await rm(candidate, { force: true }).catch(() => undefined);
      else if (hadConf) {
        try {
          await rename(lastGood, conf);
          // Without a running nginx nothing serves it: it only waits for the next start (the failure is logged once
          // by the reconciler).
          if (running) this.log.warn({ error }, "restored the last good nginx.conf; nginx keeps serving it");
          else
            this.log.debug({ error }, "put back the last good nginx.conf for the next start; nothing is serving yet");
        } catch (e) {
          error += `; restoring the last good nginx.conf failed too (${(e as Error).message}): a restart of nginx would load the rejected config`;
          this.log.error({ error }, "could not restore the last good nginx.conf");
        }
      }
      return {
        result: "failed",
        action,
        generation: rendered.generation,
        error,
        ...(retry ? { retry } : {}),
        ...(cutShort ? { cutShort } : {}),
        ms,
      };
    }
    this.live = rendered.generation;
    await this.pruneFiles(rendered);
    return { result: "applied", action, generation: rendered.generation, ms };
  }

  /** Deletes TLS files that neither the live nor the previous config references (best effort). */
  private async pruneFiles(rendered: Rendered): Promise<void> {
    const keep = new Set([...this.liveFiles, ...rendered.files.map((f) => f.path)]);
    this.liveFiles = new Set(rendered.files.map((f) => f.path));
    try {
      for (const name of await readdir(join(this.paths.dir, "tls")))
        if (!keep.has(`tls/${name}`)) await rm(join(this.paths.dir, "tls", name), { force: true });
    } catch {
      // Nothing to prune, or the state dir cannot be written: pruning waits for the next apply.
    }
  }
}

const STOPPING = Symbol("stopping");

/** Resolves STOPPING when `stop` aborts (at once if it has); never when `done` aborts first. */
function aborted(stop: AbortSignal, done: AbortSignal): Promise<typeof STOPPING> {
  return new Promise((resolve) => {
    if (stop.aborted) resolve(STOPPING);
    else stop.addEventListener("abort", () => resolve(STOPPING), { once: true, signal: done });
  });
}

/** How long a new master may take to answer while it lives (a reload is given the applier's confirm timeout). */
const START_CONFIRM_MS = 60_000;

/** Resolves with nginx's last errors when the master being started exits; false when `signal` aborts first. */
async function exitedWhileStarting(
  nginx: NginxProcess,
  errorLog: string,
  from: number,
  signal: AbortSignal,
): Promise<string | false> {
  while (!signal.aborted) {
    // nginx's own words when it logged why (as `refusal` reads them), else what it logged last.
    if (nginx.masterPid === null)
      return (await refusedWith(errorLog, from)) ?? `nginx exited while starting: ${await tail(errorLog, from)}`;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
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

/**
 * Resolves with nginx's words once its error log shows, after `from`, that it gave up on a new config: any `[emerg]`
 * except a `bind() ... failed` attempt (nginx retries those for a few seconds, then logs `still could not bind()`).
 * Without this a refused reload would hold the apply loop, and every endpoint change behind it, for the whole
 * confirmation timeout. Resolves false when the deadline passes or `signal` aborts first.
 */
async function refusal(file: string, from: number, timeoutMs: number, signal: AbortSignal): Promise<string | false> {
  const deadline = Date.now() + timeoutMs;
  while (!signal.aborted && Date.now() < deadline) {
    const refused = await refusedWith(file, from);
    if (refused !== null) return refused;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** nginx's words for giving up on a config in its error log after `from` (see `refusal`), or null when none yet. */
async function refusedWith(file: string, from: number): Promise<string | null> {
  const emerg = (await logSince(file, from))
    .filter((l) => l.includes("[emerg]"))
    .map((l) => l.replace(/^.*?\[emerg\] \d+#\d+: /, ""));
  // The distinct causes, the last bind failure (naming the address) first: "bind() to ... failed | still could not".
  return emerg.some((l) => !/bind\(\) to .* failed/.test(l)) ? [...new Set(emerg)].slice(-2).join(" | ") : null;
}

/**
 * nginx's error text summarised once (see summariseNginxError), each port another process holds named with that
 * process when /proc shows it.
 */
async function explain(text: string): Promise<string> {
  const holders = new Map<number, string>();
  for (const b of bindFailures(text))
    if (b.cause === "in-use") {
      const h = await findPortHolder(b.port);
      if (h) holders.set(b.port, describeHolder(h));
    }
  return summariseNginxError(text, holders);
}

/** What nginx logged since an offset: the reason a reload did not take (e.g. a port held by another process). */
async function tail(file: string, from: number): Promise<string> {
  const lines = (await logSince(file, from)).filter((l) => /\[(emerg|alert|crit|error)\]/.test(l));
  return lines.slice(-3).join(" | ") || "no error was logged";
}

/** The lines nginx appended to its error log since an offset (at most 8 KiB of them); none when unreadable. */
async function logSince(file: string, from: number): Promise<string[]> {
  try {
    const fh = await open(file, "r");
    try {
      const buf = Buffer.alloc(8192);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      return buf.subarray(0, bytesRead).toString("utf8").split("\n");
    } finally {
      await fh.close();
    }
  } catch {
    return [];
  }
}
