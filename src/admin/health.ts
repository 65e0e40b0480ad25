import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { StatusSnapshot, StatusStore } from "../reconciler/status.js";
import type { Logger } from "../shared/log.js";
import { readiness } from "./view.js";

/**
 * The answer to a probe path, or null for any other path. The admin server and the health listener both answer with
 * this, so `/readyz` means the same on either: 200 while nginx runs a confirmed config, else 503 with why.
 */
export function probeAnswer(path: string, snapshot: StatusSnapshot | null): { status: number; body: string } | null {
  if (path === "/healthz") return { status: 200, body: "ok\n" };
  if (path !== "/readyz") return null;
  const r = readiness(snapshot);
  return { status: r.ready ? 200 : 503, body: `${r.ready ? "ready" : "not ready"}: ${r.why}\n` };
}

/** A listener for the layer in front: `/readyz` and `/healthz` only, no token, no configuration shown. */
export interface HealthServer {
  readonly host: string;
  readonly port: number;
  /** Until attached, `/readyz` answers 503 (the controller is starting). */
  attach(status: StatusStore): void;
  close(): Promise<void>;
}

// Probes are tiny and frequent; a bounded number of connections keeps a flood on a public address from costing more.
const MAX_CONNECTIONS = 256;

function send(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    "content-type": "text/plain",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...extra,
  });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/**
 * Binds the health listener (`--health-listen`). It may face other machines without a token because it answers
 * nothing else; the admin server keeps the dashboard, metrics and status behind its own address and token.
 */
export async function startHealth(listen: { host: string; port: number }, log: Logger): Promise<HealthServer> {
  let status: StatusStore | null = null;
  const server = createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD")
      return send(res, 405, "GET or HEAD only\n", { allow: "GET, HEAD" });
    const answer = probeAnswer((req.url ?? "/").split("?")[0] ?? "/", status?.get() ?? null);
    if (!answer) return send(res, 404, "only /readyz and /healthz are served here\n");
    return send(res, answer.status, answer.body);
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    const fail = (e: Error) => reject(new Error(`--health-listen ${listen.host}:${listen.port}: ${e.message}`));
    server.once("error", fail);
    server.listen(listen.port, listen.host, () => {
      server.off("error", fail);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  log.info(
    { listen: `${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}` },
    "health listener serving /readyz and /healthz",
  );
  return {
    host: addr.address,
    port: addr.port,
    attach: (s) => void (status = s),
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}
