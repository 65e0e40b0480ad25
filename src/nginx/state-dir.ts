import { chmod, chown, lstat, mkdir, readdir, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { formatProblem, type Checked } from "../model/problem.js";
import type { Logger } from "../shared/log.js";
import type { WorkerUser } from "./worker-user.js";

/** The only entry of the state dir nginx's workers use: their temp files (bodies larger than the memory buffers). */
export const WORKER_TMP = "tmp";

/** What securing the state dir did. */
export interface SecuredDir {
  readonly dir: string;
  /** The dir's mode now: 0700, or 0710 when another user's workers must pass through to tmp/. */
  readonly mode: number;
  /** The mode it had when that was wider than `mode`, else null. */
  readonly tightenedFrom: number | null;
  /** Entries that other users could read or enter (an older version, a manual copy), now owner-only. */
  readonly tightened: readonly string[];
  /** A parent dir the workers cannot pass through (so they cannot reach tmp/), else null. */
  readonly unreachableVia: string | null;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/** True when a user with this uid and primary gid may pass through (search) a dir with this stat. */
function searchable(st: { uid: number; gid: number; mode: number }, uid: number, gid: number): boolean {
  if (st.uid === uid) return (st.mode & 0o100) !== 0;
  if (st.gid === gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** The first parent of `dir` the user cannot pass through, or null. */
async function blockingParent(dir: string, user: WorkerUser): Promise<string | null> {
  for (let p = dirname(dir); ; p = dirname(p)) {
    if (!searchable(await stat(p), user.uid, user.gid)) return p;
    if (p === dirname(p)) return null;
  }
}

/**
 * Creates the state dir, or secures an existing one. It holds nginx.conf, TLS keys, the push token and logs, and a
 * systemd `StateDirectory=` or a plain `mkdir` leaves it 0755. It stays owned by the controller's user. Without a
 * worker user (nginx-lb not root) it is 0700. With one, nginx's workers run as that user and need their temp dir:
 * the state dir is 0710 with the workers' group (they pass through, cannot list), tmp/ is theirs (0700), and every
 * other entry is owner-only, since the master (root) reads them before the workers start. A dir we cannot secure
 * (owned by another user) is an error naming what to do, not a start with readable secrets.
 */
export async function secureStateDir(dir: string, worker: WorkerUser | null): Promise<Checked<SecuredDir>> {
  const fail = (message: string): Checked<SecuredDir> => ({
    ok: false,
    errors: [{ code: "state_dir", path: dir, message }],
    warnings: [],
  });
  const target = worker ? 0o710 : 0o700;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (!st.isDirectory()) return fail("is not a directory: choose another --state-dir");
    const uid = process.getuid?.() ?? st.uid;
    // Root too: whoever owns the dir could replace the nginx.conf a root master reads.
    if (st.uid !== uid)
      return fail(
        `is owned by uid ${st.uid}, not by uid ${uid} that nginx-lb runs as: chown it to uid ${uid} ` +
          `(or run as its owner), or choose another --state-dir`,
      );
    if (worker && st.gid !== worker.gid) await chown(dir, st.uid, worker.gid);
    const was = st.mode & 0o777;
    if (was !== target) await chmod(dir, target);

    const tightened: string[] = [];
    for (const name of await readdir(dir)) {
      if (name === WORKER_TMP) continue;
      const e = await lstat(join(dir, name));
      if (e.isSymbolicLink() || (e.mode & 0o077) === 0) continue;
      await chmod(join(dir, name), e.mode & 0o700);
      tightened.push(name);
    }

    const tmp = join(dir, WORKER_TMP);
    await mkdir(tmp, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
    const t = await lstat(tmp);
    if (!t.isDirectory()) return fail(`${tmp} is not a directory: remove it`);
    const owner = worker ?? { uid, gid: t.gid };
    if (t.uid !== owner.uid || t.gid !== owner.gid) await chown(tmp, owner.uid, owner.gid);
    if ((t.mode & 0o777) !== 0o700) await chmod(tmp, 0o700);

    return {
      ok: true,
      value: {
        dir,
        mode: target,
        tightenedFrom: (was & ~target) !== 0 ? was : null,
        tightened,
        unreachableVia: worker ? await blockingParent(dir, worker) : null,
      },
      warnings: [],
    };
  } catch (e) {
    return fail(
      `cannot be created or set to mode ${octal(target)} (${(e as Error).message}): create it owned by the user ` +
        `nginx-lb runs as, or choose another --state-dir`,
    );
  }
}

/** A state dir that cannot be secured: the start stops here (the CLI exits 1 with this message). */
export class StateDirError extends Error {
  override name = "StateDirError";
}

/** secureStateDir for the composition root: logs what it changed, throws StateDirError with the problem. */
export async function ensureSecureStateDir(dir: string, log: Logger, worker: WorkerUser | null): Promise<void> {
  const r = await secureStateDir(dir, worker);
  if (!r.ok) throw new StateDirError(r.errors.map(formatProblem).join("; "));
  const now = octal(r.value.mode);
  if (r.value.tightenedFrom !== null)
    log.warn(
      { dir, was: octal(r.value.tightenedFrom), now },
      `state dir was readable by other users; tightened it to ${now}`,
    );
  if (r.value.tightened.length > 0)
    log.warn(
      { dir, entries: r.value.tightened },
      "state dir entries were readable by other users; made them readable by nginx-lb's user only",
    );
  if (worker && r.value.unreachableVia !== null)
    log.warn(
      { dir: r.value.unreachableVia, user: worker.name },
      `nginx's workers (user ${worker.name}) cannot pass through ${r.value.unreachableVia} to their temp dir ` +
        `${join(dir, WORKER_TMP)}: request and response bodies larger than nginx's memory buffers will be cut ` +
        `short; allow them through (chmod o+x ${r.value.unreachableVia}) or choose another --state-dir`,
    );
}
