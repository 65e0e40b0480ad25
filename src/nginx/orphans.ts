import { readdir, readFile, readlink } from "node:fs/promises";

/** One process as the orphan finder needs it, read from /proc. */
export interface ProcEntry {
  readonly pid: number;
  readonly ppid: number;
  /** Process group: the workers of a master we started share its pid as their group (it is a group leader). */
  readonly pgid: number;
  /** Single-letter state from /proc/<pid>/stat (Z: zombie). */
  readonly state: string;
  /** argv joined by spaces; nginx rewrites its own to "nginx: master process <original argv>". */
  readonly cmdline: string;
  /** Targets of the open file descriptors; null when they cannot be read (another user, no permission). */
  readonly files: readonly string[] | null;
}

/** What makes an nginx process ours: the state dir (its prefix) and the config file in it. */
export interface Prefix {
  readonly dir: string;
  readonly conf: string;
  /** The pid the pid file names, when that process is gone: its workers still carry it as their group. */
  readonly deadMaster: number | null;
}

/** An nginx process of our prefix that must go before a new master can bind the ports, and why it is ours. */
export interface Orphan {
  readonly pid: number;
  readonly role: "master" | "worker";
  readonly why: string;
}

const MASTER = /^nginx: master process\b/;
const HELPER = /^nginx: (worker|cache manager|cache loader) process\b/;

/** One-shot invocations (`nginx -t`, `nginx -s reload`, ...) bind nothing: they are never in the way. */
const ONE_SHOT = new Set(["-t", "-T", "-s", "-v", "-V", "-h", "-?"]);

/** True for an nginx master: retitled by nginx, or a plain `nginx` argv (before it retitled itself). */
function isMaster(p: ProcEntry): boolean {
  if (MASTER.test(p.cmdline)) return true;
  const [argv0 = "", ...args] = p.cmdline.split(" ");
  return (argv0 === "nginx" || argv0.endsWith("/nginx")) && !args.some((a) => ONE_SHOT.has(a));
}

const trimSlash = (s: string) => (s.length > 1 ? s.replace(/\/+$/, "") : s);

/**
 * Whether a master's command line names our prefix (`-p <dir>/`) or our config (`-c <dir>/nginx.conf`, or a
 * relative `-c` under `-p <dir>`). Our dir grammar has no spaces, so splitting on spaces is exact for our paths.
 */
export function namesPrefix(cmdline: string, prefix: Pick<Prefix, "dir" | "conf">): boolean {
  const argv = cmdline.split(" ");
  const after = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const p = after("-p");
  const c = after("-c");
  if (p !== undefined && trimSlash(p) === trimSlash(prefix.dir)) return true;
  if (c === undefined) return false;
  if (c.startsWith("/")) return c === prefix.conf;
  return p !== undefined && `${trimSlash(p)}/${c}` === prefix.conf;
}

/** Whether any open file lies inside our state dir (every worker keeps the error log open). */
function holdsPrefixFile(files: readonly string[], dir: string): boolean {
  const inside = `${trimSlash(dir)}/`;
  return files.some((f) => f.startsWith(inside));
}

/**
 * The nginx processes of our prefix that a new master would collide with: every live master of our prefix (but those
 * in `spare`: the master we keep, processes we spawned ourselves), and every worker whose master is gone (its parent is no nginx master: pid 1, a subreaper, or us) and
 * that is ours by its open files or, when those cannot be read, by the group of our dead master. A process of any
 * other prefix is never listed: a worker that holds files but none of ours is not ours whatever its group.
 */
export function findOrphans(
  table: readonly ProcEntry[],
  prefix: Prefix,
  spare: ReadonlySet<number> = new Set(),
): Orphan[] {
  const live = table.filter((p) => p.state !== "Z" && p.state !== "X");
  const masters = new Set(live.filter(isMaster).map((p) => p.pid));
  const out: Orphan[] = [];
  for (const p of live) {
    if (spare.has(p.pid)) continue;
    if (masters.has(p.pid)) {
      if (namesPrefix(p.cmdline, prefix))
        out.push({ pid: p.pid, role: "master", why: "an nginx master of this state dir that we did not start" });
      continue;
    }
    if (!HELPER.test(p.cmdline) || masters.has(p.ppid)) continue;
    if (p.files !== null) {
      if (holdsPrefixFile(p.files, prefix.dir))
        out.push({ pid: p.pid, role: "worker", why: `its master is gone and it holds files of ${prefix.dir}` });
    } else if (prefix.deadMaster !== null && p.pgid === prefix.deadMaster)
      out.push({ pid: p.pid, role: "worker", why: `a worker of the dead master ${prefix.deadMaster} (pid file)` });
  }
  return out;
}

/** Parses /proc/<pid>/stat: the command may hold spaces and parentheses, so fields count from the last ")". */
export function parseStat(stat: string): { state: string; ppid: number; pgid: number } | null {
  const end = stat.lastIndexOf(")");
  if (end < 0) return null;
  const [state = "", ppid = "", pgid = ""] = stat.slice(end + 2).split(" ");
  const pp = Number(ppid);
  const pg = Number(pgid);
  return Number.isInteger(pp) && Number.isInteger(pg) ? { state, ppid: pp, pgid: pg } : null;
}

async function openFiles(root: string, pid: number): Promise<string[] | null> {
  try {
    const fds = await readdir(`${root}/${pid}/fd`);
    const links = await Promise.all(fds.map((fd) => readlink(`${root}/${pid}/fd/${fd}`).catch(() => "")));
    return links.filter((l) => l !== "");
  } catch {
    return null;
  }
}

/**
 * The nginx processes in the process table (`root` is /proc; a test passes a directory laid out the same way).
 * Processes that vanish while being read are skipped; open files are read only for nginx processes.
 */
export async function readNginxProcesses(root = "/proc"): Promise<ProcEntry[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  const pids = names.filter((n) => /^\d+$/.test(n)).map(Number);
  const entries = await Promise.all(
    pids.map(async (pid): Promise<ProcEntry | null> => {
      try {
        const cmdline = (await readFile(`${root}/${pid}/cmdline`, "utf8")).replace(/\0+$/, "").replace(/\0/g, " ");
        if (!cmdline.startsWith("nginx") && !/^\S*\/nginx\b/.test(cmdline)) return null;
        const stat = parseStat(await readFile(`${root}/${pid}/stat`, "utf8"));
        if (stat === null) return null;
        return { pid, ...stat, cmdline: cmdline.trim(), files: await openFiles(root, pid) };
      } catch {
        return null;
      }
    }),
  );
  return entries.filter((e): e is ProcEntry => e !== null);
}

/** How retiring reaches the system; a test injects its own table and signals. */
export interface RetireDeps {
  readonly table: () => Promise<readonly ProcEntry[]>;
  /** Whether a process still runs (a zombie does not): a cheap check of the few pids being retired. */
  readonly running: (pid: number) => Promise<boolean>;
  readonly signal: (pid: number, signal: NodeJS.Signals) => void;
  readonly sleep: (ms: number) => Promise<void>;
  readonly now: () => number;
}

/** What retiring did: every process found (and why), those that needed SIGKILL, those still there after it. */
export interface Retired {
  readonly found: readonly Orphan[];
  readonly killed: readonly number[];
  readonly left: readonly number[];
}

/** True while /proc/<pid> exists and is not a zombie. */
async function running(pid: number, root = "/proc"): Promise<boolean> {
  try {
    const stat = parseStat(await readFile(`${root}/${pid}/stat`, "utf8"));
    return stat !== null && stat.state !== "Z" && stat.state !== "X";
  } catch {
    return false;
  }
}

export const realRetireDeps: RetireDeps = {
  table: () => readNginxProcesses(),
  running: (pid) => running(pid),
  signal: (pid, signal) => process.kill(pid, signal),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => Date.now(),
};

const ROUNDS = 3;

/**
 * Retires the orphans of our prefix: SIGQUIT (a master stops its workers, a worker finishes its requests), then
 * SIGKILL what is still there after `graceMs`. A master killed that way orphans its own workers, so the search runs
 * again, a bounded number of rounds.
 */
export async function retireOrphans(
  prefix: Prefix,
  spare: ReadonlySet<number>,
  deps: RetireDeps,
  graceMs: number,
): Promise<Retired> {
  const found = new Map<number, Orphan>();
  const killed: number[] = [];
  const send = (pid: number, sig: NodeJS.Signals) => {
    try {
      deps.signal(pid, sig);
    } catch {
      // Gone already: that is what we want.
    }
  };
  const present = async (pids: readonly number[]) => {
    const states = await Promise.all(pids.map(deps.running));
    return pids.filter((_, i) => states[i]);
  };
  for (let round = 0; round < ROUNDS; round++) {
    const orphans = findOrphans(await deps.table(), prefix, spare);
    if (orphans.length === 0) break;
    for (const o of orphans) if (!found.has(o.pid)) found.set(o.pid, o);
    for (const o of orphans) send(o.pid, "SIGQUIT");
    const deadline = deps.now() + graceMs;
    let left = await present(orphans.map((o) => o.pid));
    while (left.length > 0 && deps.now() < deadline) {
      // Every millisecond here the ports are closed: poll often (a few stat reads).
      await deps.sleep(5);
      left = await present(left);
    }
    for (const pid of left) {
      send(pid, "SIGKILL");
      killed.push(pid);
    }
    // SIGKILL is not refused, but the kernel takes a moment to tear a process down.
    const killDeadline = deps.now() + 1000;
    while (left.length > 0 && deps.now() < killDeadline) {
      await deps.sleep(20);
      left = await present(left);
    }
  }
  const left = findOrphans(await deps.table(), prefix, spare).map((o) => o.pid);
  return { found: [...found.values()], killed, left };
}
