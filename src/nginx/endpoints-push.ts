import { request } from "node:http";
import type { EndpointSets, PushedEndpoint } from "../model/plan.js";
import { Table } from "../model/table.js";
import { ENDPOINTS_PATH, endpointSets } from "../render/dynamic.js";
import type { BoundRoute } from "../render/bind-routes.js";
import { encodeSets, PUSH_CONTENT_TYPE } from "./push-format.js";

/** The body of a push: every route's whole endpoint set, tagged with the controller's version. */
export interface PushBody {
  readonly version: number;
  /** Present on a partial push: the version nginx must hold; only the listed upstreams are replaced. */
  readonly base?: number;
  readonly upstreams: EndpointSets;
  /** A partial push only: upstreams nginx forgets (routes removed without a reload, in dynamic routes mode). */
  readonly removed?: readonly string[];
}

/** Builds the push body from the same bound routes the renderer uses, so both modes balance over identical members. */
export function pushBody(version: number, routes: readonly BoundRoute[]): PushBody {
  return { version, upstreams: endpointSets(routes) };
}

/**
 * A partial push carrying only the `changed` sets of `desired` (what `plan` found to differ from what nginx holds at
 * version `base`). Keeps a one-endpoint change cheap with 10,000 routes.
 */
export function partialPushBody(
  version: number,
  base: number,
  desired: EndpointSets,
  changed: readonly string[],
): PushBody {
  const upstreams: [string, readonly PushedEndpoint[]][] = [];
  const removed: string[] = [];
  for (const name of changed) {
    const set = desired.get(name);
    if (set) upstreams.push([name, set]);
    else removed.push(name);
  }
  return { version, base, upstreams: Table.from(upstreams), ...(removed.length > 0 ? { removed } : {}) };
}

export interface PushTarget {
  /** The control server's loopback port (RenderOptions.controlPort). */
  readonly port: number;
  readonly host?: string;
  /** The push token rendered into nginx.conf (RenderOptions.pushToken). */
  readonly token?: string;
  /** Whole-request deadline. Default 5,000 ms. */
  readonly timeoutMs?: number;
}

/** Why a push or query failed: the HTTP status (0 when no answer) and nginx's words. */
export class PushError extends Error {
  override name = "PushError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** One token-carrying request to a push endpoint of the control server; resolves with the version nginx holds. */
export function controlCall(
  target: PushTarget,
  method: "GET" | "POST",
  body?: string,
  path: string = ENDPOINTS_PATH,
): Promise<{ version: number | null }> {
  const payload = body === undefined ? undefined : Buffer.from(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: target.host ?? "127.0.0.1",
        port: target.port,
        path,
        method,
        agent: false,
        headers: {
          ...(payload
            ? { "content-type": PUSH_CONTENT_TYPE, "content-length": payload.length }
            : { "content-length": 0 }),
          ...(target.token ? { "x-nginx-lb-token": target.token } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8").trim();
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          const obj = (typeof parsed === "object" && parsed !== null ? parsed : {}) as Record<string, unknown>;
          // nginx's answers name lines, ports and host names only (the Lua never echoes a body).
          if (status !== 200) {
            reject(new PushError(status, `${method} ${path}: ${status} ${String(obj["error"] ?? text.slice(0, 200))}`));
            return;
          }
          const v = obj["version"];
          if (v !== null && typeof v !== "number") {
            reject(new PushError(status, `${method} ${path}: unexpected answer ${text.slice(0, 200)}`));
            return;
          }
          resolve({ version: v });
        });
      },
    );
    req.setTimeout(target.timeoutMs ?? 5000, () =>
      req.destroy(new PushError(0, `${method} ${path}: no answer within ${target.timeoutMs ?? 5000} ms`)),
    );
    req.on("error", (e) => reject(e instanceof PushError ? e : new PushError(0, `${method} ${path}: ${e.message}`)));
    req.end(payload);
  });
}

/**
 * Sends a push (whole, or partial with `base`); resolves with the version nginx stored. A 409 on a partial push means
 * nginx holds another version: send a whole push.
 */
export async function pushEndpoints(target: PushTarget, body: PushBody): Promise<number> {
  const { version } = await controlCall(
    target,
    "POST",
    encodeSets(body.version, body.upstreams, body.base, body.removed),
  );
  if (version === null) throw new PushError(200, `POST ${ENDPOINTS_PATH}: nginx stored no version`);
  return version;
}

/** The version nginx holds, or null when nothing was pushed since its shared dict was created. */
export async function pushedVersion(target: PushTarget): Promise<number | null> {
  return (await controlCall(target, "GET")).version;
}

/** What the controller last knew nginx to hold: the version and the sets; null after a (re)start or a failed push. */
export interface PushedState {
  readonly version: number;
  readonly sets: EndpointSets;
}

/**
 * Makes nginx hold `desired`: a partial push of the `changed` upstreams when nginx's sets are known (`running`), a
 * whole push for `all` or when nginx refuses the partial one (409: it holds another version). Throws PushError when
 * nginx cannot be reached or refuses the whole push; the caller retries with backoff and treats the state as unknown.
 */
export async function syncEndpoints(
  target: PushTarget,
  running: PushedState | null,
  desired: EndpointSets,
  changed: readonly string[] | "all",
  nextVersion: number,
): Promise<PushedState> {
  const whole = async () => ({
    version: await pushEndpoints(target, { version: nextVersion, upstreams: desired }),
    sets: desired,
  });
  if (!running || changed === "all") return whole();
  if (changed.length === 0) return running;
  const body = partialPushBody(nextVersion, running.version, desired, changed);
  return partialElseWhole(async () => ({ version: await pushEndpoints(target, body), sets: desired }), whole);
}

/**
 * Runs a partial push, and the whole push instead when nginx refuses the partial one with 409 (it holds another
 * version than the partial push's base: restarted, or another push landed). Any other failure is the caller's.
 */
export async function partialElseWhole<T>(partial: () => Promise<T>, whole: () => Promise<T>): Promise<T> {
  try {
    return await partial();
  } catch (e) {
    if (!(e instanceof PushError && e.status === 409)) throw e;
  }
  return whole();
}
