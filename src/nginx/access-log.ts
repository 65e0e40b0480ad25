import { constants } from "node:fs";
import { chmod, lstat, open } from "node:fs/promises";
import { formatProblem, type Checked } from "../model/problem.js";
import type { Logger } from "../shared/log.js";

/** What preparing the access log did: created it, or the mode it had when others could read or write it. */
export interface PreparedAccessLog {
  readonly file: string;
  readonly created: boolean;
  readonly tightenedFrom: number | null;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/**
 * Readies `--access-log FILE` before nginx opens it. nginx would create a missing file 0644, readable by every local
 * user, and it holds client addresses and every URI (tokens in query strings included): the controller creates it
 * 0600 instead, and takes other users' access away from an existing one. A symbolic link (nginx, often root, would
 * append wherever it points), something other than a file, or a file another user owns (who could read it or open it
 * up again) is refused with what to do.
 */
export async function prepareAccessLog(file: string): Promise<Checked<PreparedAccessLog>> {
  const fail = (message: string): Checked<PreparedAccessLog> => ({
    ok: false,
    errors: [{ code: "access_log", path: `--access-log ${file}`, message }],
    warnings: [],
  });
  const st = await lstat(file).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? null : e));
  if (st instanceof Error) return fail(`cannot be read (${st.message}): choose another file, or off`);
  if (st === null) {
    try {
      const flags =
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND | constants.O_NOFOLLOW;
      await (await open(file, flags, 0o600)).close();
      return { ok: true, value: { file, created: true, tightenedFrom: null }, warnings: [] };
    } catch (e) {
      return fail(`cannot be created (${(e as Error).message}): create its directory first, or choose another file`);
    }
  }
  if (st.isSymbolicLink()) return fail("is a symbolic link: name the file it points to");
  if (!st.isFile()) return fail("is not a regular file: name a file (nginx writes it, not the controller's stdout)");
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid && st.uid !== 0)
    return fail(`is owned by uid ${st.uid}, who could read every request: chown it to uid ${uid}, or remove it`);
  if ((st.mode & 0o007) === 0) return { ok: true, value: { file, created: false, tightenedFrom: null }, warnings: [] };
  try {
    await chmod(file, st.mode & 0o770);
  } catch (e) {
    return fail(`cannot be set to mode ${octal(st.mode & 0o770)} (${(e as Error).message})`);
  }
  return { ok: true, value: { file, created: false, tightenedFrom: st.mode & 0o777 }, warnings: [] };
}

/** A refused access log: the start stops here (the CLI exits 1 with this message). */
export class AccessLogError extends Error {
  override name = "AccessLogError";
}

/** prepareAccessLog for the composition root: logs what it changed, throws AccessLogError with the problem. */
export async function ensureAccessLog(file: string, log: Logger): Promise<void> {
  const r = await prepareAccessLog(file);
  if (!r.ok) throw new AccessLogError(r.errors.map(formatProblem).join("; "));
  if (r.value.created) log.info({ file }, "access log created (mode 0600)");
  if (r.value.tightenedFrom !== null)
    log.warn(
      { file, was: octal(r.value.tightenedFrom), now: octal(r.value.tightenedFrom & 0o770) },
      "access log was readable by every local user; took their access away",
    );
}
