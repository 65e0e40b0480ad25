/**
 * The first read of services.json on a thread of its own. At start the controller's thread loads the etcd client and
 * indexes the registry's list, and reading and checking 10,000 sites takes about as long again: on another core the
 * two overlap, and the first apply comes that much sooner. The worker calls the function the source calls
 * (`readServicesText`); what comes back is the same value, copied between threads.
 *
 * The read is taken only for the file as it still is: the worker sends the bytes it read, and the source, once its
 * watcher is set up, reads the file's bytes again and compares (a copy and a compare of a few megabytes), so a write
 * in between is read again, as it would have been. Anything else (no worker thread, an error in it, a file that
 * changed) gives null, and the source reads the file itself.
 */
import { readFile, stat } from "node:fs/promises";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { ServicesRead } from "./services-text.js";

/** What the worker posts: the bytes it read and its read of them, or null when the file could not be read. */
export type WorkerRead = {
  readonly bytes: Uint8Array;
  readonly read: ServicesRead;
  readonly ms: { readonly read: number; readonly check: number };
} | null;

/** A read the source may take when the file still holds `bytes`. */
export type FirstRead = NonNullable<WorkerRead>;

/** The worker's module beside this one: `.js` when compiled, `.ts` when run from the sources. */
const EXT = extname(fileURLToPath(import.meta.url));
const WORKER = new URL(`./services-read-worker${EXT}`, import.meta.url);

function startWorker(file: string): Worker {
  const workerData = { file };
  if (EXT !== ".ts") return new Worker(WORKER, { workerData });
  // From the sources (the CLI through tsx, or vitest): a worker thread does not inherit the loader that reads
  // TypeScript, so it registers tsx's before it loads the module.
  const api = import.meta.resolve("tsx/esm/api");
  const load = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER.href)}); })`;
  return new Worker(load, { eval: true, workerData });
}

/**
 * Below this size the worker's own start (a thread, the modules that read and check) takes longer than reading the
 * file here: about 5,000 sites.
 */
export const WORKER_MIN_BYTES = 1 << 20;

/**
 * Takes a first read, once: later calls resolve null, and nothing of the read stays reachable through the function
 * (a whole model of the file and its bytes, which the source replaces at the next change).
 */
export type TakeFirstRead = () => Promise<FirstRead | null>;

/**
 * Starts reading `file` on a worker thread when it is large enough to pay off; the read resolves null when it is not
 * or when that does not work out (see the module comment).
 */
export function readServicesInWorker(file: string, minBytes = WORKER_MIN_BYTES): TakeFirstRead {
  let pending: Promise<FirstRead | null> | null = stat(file).then(
    (s) => (s.size >= minBytes ? inWorker(file) : null),
    () => null,
  );
  return () => {
    const taken = pending ?? Promise.resolve(null);
    pending = null;
    return taken;
  };
}

function inWorker(file: string): Promise<FirstRead | null> {
  return new Promise((resolve) => {
    let worker: Worker;
    try {
      worker = startWorker(file);
    } catch {
      resolve(null);
      return;
    }
    const end = (read: FirstRead | null) => {
      clearTimeout(timer);
      resolve(read);
      void worker.terminate();
    };
    // A worker that never answers must not hold the start: the source then reads the file itself.
    const timer = setTimeout(() => end(null), WORKER_TIMEOUT_MS);
    worker.once("message", (m: WorkerRead) => end(m));
    worker.once("error", () => end(null));
    worker.once("exit", () => end(null));
  });
}

/** Many times what reading and checking 10,000 sites takes on a busy machine. */
const WORKER_TIMEOUT_MS = 60_000;

/** The worker's read when `file` still holds the bytes it read, else null. */
export async function stillCurrent(file: string, first: FirstRead | null): Promise<ServicesRead | null> {
  if (first === null) return null;
  try {
    return Buffer.from(first.bytes.buffer, first.bytes.byteOffset, first.bytes.byteLength).equals(await readFile(file))
      ? first.read
      : null;
  } catch {
    return null;
  }
}
