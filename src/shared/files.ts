import { chmod, mkdir, open, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";

let sequence = 0;

/** The buffer a file given in pieces is encoded into and written from. */
const WRITE_BUFFER = 1 << 20;

/**
 * Writes `pieces` at the handle's position, encoded (UTF-8) into one buffer that is written whenever the next piece
 * might not fit, and returns the bytes written. Joining pieces into strings instead would allocate one string per
 * batch: strings over 128 KiB live in V8's large-object space, freed only by a full collection, and a file rewritten
 * after every change (state.json, the start-up sets) would then leave megabytes of them per change. The buffer is
 * outside the heap and freed with its small handle in the next young-generation collection.
 */
export async function writePieces(fh: FileHandle, pieces: Iterable<string>, size = WRITE_BUFFER): Promise<number> {
  const buf = Buffer.allocUnsafe(size);
  let used = 0;
  let total = 0;
  const flush = async () => {
    total += await writeAll(fh, buf, used);
    used = 0;
  };
  for (const p of pieces) {
    // A UTF-16 code unit takes at most 3 bytes in UTF-8 (a surrogate pair: 4 bytes for 2 units).
    if (used + p.length * 3 > size) await flush();
    if (p.length * 3 > size) {
      // Longer than the buffer: written as it is (one string the caller already holds).
      const whole = Buffer.from(p);
      total += await writeAll(fh, whole, whole.length);
      continue;
    }
    used += buf.write(p, used);
  }
  await flush();
  return total;
}

/** Writes `buf`'s first `length` bytes at the handle's position, however many writes that takes; returns `length`. */
async function writeAll(fh: FileHandle, buf: Buffer, length: number): Promise<number> {
  for (let at = 0; at < length;) at += (await fh.write(buf, at, length - at)).bytesWritten;
  return length;
}

/**
 * Writes a file atomically (temp file, fsync, rename) with the given mode, so readers never see half a file. Content
 * given as pieces is encoded into one buffer a part at a time (`writePieces`), so a large file (state.json at 100,000
 * endpoints) never exists as one string. On any failure (a full or read-only disk) the temp file is removed: a retried
 * write must not fill the disk further. Owner only by default: what we write (nginx.conf with its push token, state)
 * is for our user and nginx's master alone.
 */
export async function writeFileAtomic(file: string, content: string | Iterable<string>, mode = 0o600): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${++sequence}`;
  try {
    const fh = await open(tmp, "w", mode);
    try {
      if (typeof content === "string") await fh.writeFile(content);
      else await writePieces(fh, content);
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
