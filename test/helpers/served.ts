/**
 * What an operator checks after a fault: the set of backends that answer through nginx, compared with the registry.
 *
 *   expect(await served(`http://127.0.0.1:${port}/`)).toEqual(["127.0.0.2", "127.0.0.3"]);
 *
 * Each entry is an echo backend's address, `status N` for any other answer, or `failed: why` for no answer.
 */
import type { Echo } from "./backends.js";
import { get } from "./http.js";
import { sleep } from "./wait.js";

export interface ServedOptions {
  /** Host header. Default `a.test`, the site the fault tests serve. */
  readonly host?: string;
  /** Requests sent. Default 30. */
  readonly n?: number;
}

/** The sorted distinct answers of `n` requests. */
export async function served(url: string, options: ServedOptions = {}): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < (options.n ?? 30); i++) {
    const r = await get(url, { host: options.host ?? "a.test", timeoutMs: 3000 }).catch((e: Error) => e);
    seen.add(
      r instanceof Error ? `failed: ${r.message}` : r.status === 200 ? r.json<Echo>().backend : `status ${r.status}`,
    );
    // A load loop's requests may interleave with these: a random pause keeps round robin from phase-locking each
    // stream of requests onto one backend.
    await sleep(Math.random() * 4);
  }
  return [...seen].sort();
}
