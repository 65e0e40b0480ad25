import { chmod, mkdir, stat } from "node:fs/promises";
import { formatProblem, type Checked } from "../model/problem.js";
import type { Logger } from "../shared/log.js";

/** What securing the state dir did: the mode it had when it was wider than 0700, else null. */
export interface SecuredDir {
  readonly dir: string;
  readonly tightenedFrom: number | null;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/**
 * Creates the state dir, or tightens an existing one, to 0700: it holds nginx.conf, TLS keys, the push token and
 * logs, and a systemd `StateDirectory=` or a plain `mkdir` leaves it 0755. A dir we cannot tighten (owned by another
 * user) is an error naming what to do, not a start with readable secrets.
 */
export async function secureStateDir(dir: string): Promise<Checked<SecuredDir>> {
  const fail = (message: string): Checked<SecuredDir> => ({
    ok: false,
    errors: [{ code: "state_dir", path: dir, message }],
    warnings: [],
  });
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (!st.isDirectory()) return fail("is not a directory: choose another --state-dir");
    const uid = process.getuid?.() ?? st.uid;
    if (st.uid !== uid && uid !== 0)
      return fail(
        `is owned by uid ${st.uid}, not by uid ${uid} that nginx-lb runs as: chown it to uid ${uid} ` +
          `(or run as its owner), or choose another --state-dir`,
      );
    if ((st.mode & 0o077) === 0) return { ok: true, value: { dir, tightenedFrom: null }, warnings: [] };
    await chmod(dir, 0o700);
    return { ok: true, value: { dir, tightenedFrom: st.mode & 0o777 }, warnings: [] };
  } catch (e) {
    return fail(
      `cannot be created or set to mode 0700 (${(e as Error).message}): create it owned by the user nginx-lb ` +
        `runs as, or choose another --state-dir`,
    );
  }
}

/** A state dir that cannot be secured: the start stops here (the CLI exits 1 with this message). */
export class StateDirError extends Error {
  override name = "StateDirError";
}

/** secureStateDir for the composition root: logs a tightening, throws StateDirError with the problem. */
export async function ensureSecureStateDir(dir: string, log: Logger): Promise<void> {
  const r = await secureStateDir(dir);
  if (!r.ok) throw new StateDirError(r.errors.map(formatProblem).join("; "));
  if (r.value.tightenedFrom !== null)
    log.warn(
      { dir, was: octal(r.value.tightenedFrom), now: "0700" },
      "state dir was readable by other users; tightened it to 0700",
    );
}
