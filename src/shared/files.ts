import { chmod, mkdir, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

let sequence = 0;

/** How much of a file given in pieces is joined and written at once. */
const WRITE_BATCH = 1 << 20;

/** The pieces joined into strings of about `size` characters (a piece longer than that is one batch of its own). */
export function* batches(pieces: Iterable<string>, size: number): Generator<string> {
  let parts: string[] = [];
  let length = 0;
  for (const p of pieces) {
    parts.push(p);
    length += p.length;
    if (length >= size) {
      yield parts.join("");
      parts = [];
      length = 0;
    }
  }
  if (parts.length > 0) yield parts.join("");
}

/**
 * Writes a file atomically (temp file, fsync, rename) with the given mode, so readers never see half a file. Content
 * given as pieces is written a batch at a time, so a large file (state.json at 100,000 endpoints) never exists as one
 * string, nor as one buffer. On any
 * failure (a full or read-only disk) the temp file is removed: a retried write must not fill the disk further. Owner
 * only by default: what we write (nginx.conf with its push token, state) is for our user and nginx's master alone.
 */
export async function writeFileAtomic(file: string, content: string | Iterable<string>, mode = 0o600): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${++sequence}`;
  try {
    const fh = await open(tmp, "w", mode);
    try {
      if (typeof content === "string") await fh.writeFile(content);
      else
        for (const batch of batches(content, WRITE_BATCH))
          // From the current position: the batches follow each other.
          await fh.writeFile(batch);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}
