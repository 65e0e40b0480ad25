import { chmod, mkdir, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

let sequence = 0;

/**
 * Writes a file atomically (temp file, fsync, rename) with the given mode, so readers never see half a file. On any
 * failure (a full or read-only disk) the temp file is removed: a retried write must not fill the disk further.
 */
export async function writeFileAtomic(file: string, content: string, mode = 0o644): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${++sequence}`;
  try {
    const fh = await open(tmp, "w", mode);
    try {
      await fh.writeFile(content);
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
