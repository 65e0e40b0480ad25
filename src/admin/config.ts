import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

export const DEFAULT_ADMIN_LISTEN = "127.0.0.1:9180";
const MIN_TOKEN_LENGTH = 16;

/** Where the admin server listens and the bearer token it requires (always when not on loopback). */
export interface AdminConfig {
  readonly host: string;
  readonly port: number;
  readonly token?: string;
  /**
   * Without a configured token: a token written to the state dir for the local operator. Not required for anything;
   * it marks its holder as authenticated (the event-stream slots kept for authenticated clients).
   */
  readonly localToken?: string;
}

/** A reason the admin server must not start; the CLI prints it and exits 1. */
export class AdminConfigError extends Error {
  override name = "AdminConfigError";
}

/** Parses `host:port`, `[v6]:port` or `:port` (loopback); errors name `flag`. */
export function parseListen(listen: string, flag = "--admin-listen"): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen.trim());
  const host = m ? (m[1] ?? m[2] ?? "") : "";
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535))
    throw new AdminConfigError(`${flag} must be HOST:PORT (e.g. ${DEFAULT_ADMIN_LISTEN}), got "${listen}"`);
  if (host === "") return { host: "127.0.0.1", port };
  if (host !== "localhost" && isIP(host) === 0)
    throw new AdminConfigError(`${flag} host must be an IP address or localhost, got "${host}"`);
  return { host, port };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) || host === "::ffff:127.0.0.1";
}

/** Resolves the admin settings; refuses a non-loopback address without a token of reasonable length. */
export function resolveAdminConfig(o: { listen: string; token?: string; tokenFile?: string }): AdminConfig {
  const { host, port } = parseListen(o.listen);
  let token = o.token;
  if (!token && o.tokenFile) {
    try {
      token = readFileSync(o.tokenFile, "utf8").trim();
    } catch (e) {
      throw new AdminConfigError(`cannot read --admin-token-file: ${(e as Error).message}`);
    }
  }
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH)
    throw new AdminConfigError(`the admin token must be at least ${MIN_TOKEN_LENGTH} characters`);
  if (!token && !isLoopback(host))
    throw new AdminConfigError(
      `--admin-listen ${o.listen} is reachable from other machines: set NGINX_LB_ADMIN_TOKEN or --admin-token-file ` +
        `(a bearer token), or listen on 127.0.0.1`,
    );
  return { host, port, ...(token ? { token } : {}) };
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/** Compares a presented token with the expected one in constant time (equal-length digests). */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  return timingSafeEqual(digest(presented ?? ""), digest(expected)) && presented !== undefined;
}
