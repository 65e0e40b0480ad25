/** The benchmark's own HTTP probe: a fresh connection per request, as a new client would arrive. */
import { request } from "node:http";

export interface Probe {
  readonly status: number;
  /** The static backend that answered (its ip), or "" when nginx answered itself (503) or the request failed. */
  readonly backend: string;
  /** performance.now() when the response was complete. */
  readonly at: number;
}

export function probe(port: number, host: string, path = "/", timeoutMs = 2000): Promise<Probe> {
  return new Promise((resolve) => {
    const req = request(
      { host: "127.0.0.1", port, path, headers: { host }, agent: false, timeout: timeoutMs },
      (res) => {
        const backend = String(res.headers["x-backend"] ?? "");
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, backend, at: performance.now() }));
        res.on("error", () => resolve({ status: 0, backend: "", at: performance.now() }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve({ status: 0, backend: "", at: performance.now() }));
    req.end();
  });
}

/** Runs `fn` over `items` with at most `concurrency` in flight. */
export async function pool<T, R>(items: readonly T[], concurrency: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}
