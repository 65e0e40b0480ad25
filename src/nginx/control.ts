import { request } from "node:http";
import { GENERATION_PATH } from "../render/index.js";

/** Asks nginx's loopback control server which config generation is serving; null when nothing answers. */
export function fetchGeneration(port: number, timeoutMs = 500): Promise<string | null> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: GENERATION_PATH, agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve(res.statusCode === 200 ? body.trim() : null));
      res.on("error", () => resolve(null));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(null));
    req.end();
  });
}

/** Polls until nginx serves `generation` or the deadline passes. Resolves true when it does. */
export async function waitForGeneration(
  port: number,
  generation: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !signal?.aborted) {
    if ((await fetchGeneration(port)) === generation) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}
