import { open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { EndpointSets } from "../model/plan.js";
import { INITIAL_SETS_FILE } from "../render/dynamic.js";
import { writePieces } from "../shared/files.js";
import { setsText, type EncodedSets } from "./push-format.js";

/** What writing the start-up sets did: the file and its size, or why it could not (nothing is left behind then). */
export type InitialSetsOutcome =
  | { readonly ok: true; readonly path: string; readonly bytes: number }
  | { readonly ok: false; readonly path: string; readonly error: string };

/**
 * Keeps the sets nginx holds at `version` in `<dir>/endpoints.sets` (0600, the push format), which a new nginx master
 * loads at start (init_by_lua) so a restart after a crash serves them instead of 503 until the next push. Call after
 * each successful push. Atomic (temp file, fsync, rename), so a master starting meanwhile reads the old file or the
 * new one, never half of one; on failure (state dir full or read-only) the temp file is removed and the old file
 * stays, and the outcome says why.
 */
export async function writeInitialSets(
  dir: string,
  version: number,
  sets: EndpointSets,
  encoded?: EncodedSets,
): Promise<InitialSetsOutcome> {
  return writeStartupFile(
    join(dir, INITIAL_SETS_FILE),
    setsText(version, sets, undefined, [], encoded),
    "the start-up endpoint sets",
    "a restarted nginx would answer 503 until the next push",
  );
}

/**
 * Writes what a new master loads at start (`text` at `path`, 0600) atomically: temp file, fsync, rename. `what` and
 * `otherwise` word the error (what the file is, what a restart does without it). Text given in pieces is encoded
 * into one buffer (`writePieces`): these files are rewritten after pushes, and a whole table as one string of
 * megabytes would go to V8's large-object space, freed only by a full collection, after each of them.
 */
export async function writeStartupFile(
  path: string,
  text: string | Iterable<string>,
  what: string,
  otherwise: string,
): Promise<InitialSetsOutcome> {
  // One writer per controller (the applier applies one target at a time), so the pid names the temp file uniquely.
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await rm(tmp, { force: true });
    // "wx": never write through a file or link someone placed at the temp name; 0600: the sets map the whole network.
    const fh = await open(tmp, "wx", 0o600);
    let bytes = 0;
    try {
      bytes = await writePieces(fh, typeof text === "string" ? [text] : text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    return { ok: true, path, bytes };
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    return {
      ok: false,
      path,
      error:
        `cannot write ${what} ${path}: ${(e as Error).message}; ${otherwise}: ` +
        `free space in (or fix the permissions of) the state dir`,
    };
  }
}
