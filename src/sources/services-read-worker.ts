/**
 * The body of `readServicesInWorker` (first-read.ts): reads and checks services.json once, on its own thread, and
 * posts the bytes it read and its read of them back (null when the file cannot be read: the source then reads it and
 * says why).
 */
import { readFile } from "node:fs/promises";
import { parentPort, workerData } from "node:worker_threads";
import { nodeTlsInspector } from "../tls/inspect.js";
import type { WorkerRead } from "./first-read.js";
import { readServicesText } from "./services-text.js";

async function readOnce(file: string): Promise<WorkerRead> {
  const t0 = performance.now();
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    return null;
  }
  // As readTextFile decodes it.
  const text = bytes.toString("utf8");
  const t1 = performance.now();
  const read = readServicesText(text, null, { inspectTls: nodeTlsInspector });
  return { bytes, read, ms: { read: t1 - t0, check: performance.now() - t1 } };
}

parentPort?.postMessage(await readOnce((workerData as { file: string }).file));
