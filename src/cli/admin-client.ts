import { readFile } from "node:fs/promises";
import type { StatusView } from "../admin/view.js";

/** How the commands that ask a running controller (`status`, `diff`) find its admin server and token. */
export interface AdminClientFlags {
  admin: string;
  adminTokenFile?: string;
}

export const ADMIN_TOKEN_ENV = "NGINX_LB_ADMIN_TOKEN";
const TIMEOUT_MS = 5000;

/** The admin server's base URL from `--admin`: a URL, or HOST:PORT as `--admin-listen` takes it. */
export function adminBaseUrl(admin: string): URL | null {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(admin) ? admin : `http://${admin}`;
  try {
    const u = new URL(withScheme.endsWith("/") ? withScheme : `${withScheme}/`);
    return u.protocol === "http:" || u.protocol === "https:" ? u : null;
  } catch {
    return null;
  }
}

/** The controller's status view, or one line saying why it could not be had (the caller prefixes its name). */
export type FetchedStatus =
  { readonly ok: true; readonly view: StatusView; readonly url: URL } | { readonly ok: false; readonly why: string };

/**
 * Reads `/api/status` of a running controller. The token comes from `--admin-token-file`, else the environment: the
 * same precedence `run` uses for every secret. Nothing is thrown: every failure is a `why`.
 */
export async function fetchStatusView(
  flags: AdminClientFlags,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<FetchedStatus> {
  let token = env[ADMIN_TOKEN_ENV];
  if (flags.adminTokenFile) {
    try {
      token = (await readFile(flags.adminTokenFile, "utf8")).trim();
    } catch (e) {
      return { ok: false, why: `cannot read --admin-token-file: ${(e as Error).message}` };
    }
  }
  const base = adminBaseUrl(flags.admin);
  if (!base)
    return { ok: false, why: `--admin must be a URL or HOST:PORT (e.g. 127.0.0.1:9180), got "${flags.admin}"` };
  const url = new URL("api/status", base);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (e) {
    // fetch says only "fetch failed"; the cause has the system error.
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const reason =
      err.name === "TimeoutError"
        ? `no answer within ${TIMEOUT_MS / 1000} s`
        : err.cause?.code === "ECONNREFUSED"
          ? "connection refused (is nginx-lb run serving its admin server there? see --admin-listen)"
          : (err.cause?.message ?? err.message);
    return { ok: false, why: `cannot reach ${url.origin}: ${reason}` };
  }
  try {
    if (!res.ok) return { ok: false, why: `${url.href} answered ${res.status}: ${(await res.text()).trim()}` };
    return { ok: true, view: (await res.json()) as StatusView, url };
  } catch (e) {
    return { ok: false, why: `${url.href} sent an unreadable answer: ${(e as Error).message}` };
  }
}
