/**
 * etcd failures in an operator's words: which etcd, what it did, what happens next and what to check. Library
 * internals (gRPC status codes, "Resolution note", circuit breakers) are translated, never passed through: the
 * operator cannot act on them.
 */

/** What the failing etcd did, as a phrase following "etcd at URL" (never including the password). */
export function etcdFailure(error: unknown, auth?: { readonly username: string }): string {
  const e = error as { message?: unknown; code?: unknown; status?: unknown; constructor?: { name?: string } } | null;
  const msg = typeof e?.message === "string" ? e.message : String(error);
  const code = typeof e?.code === "string" ? e.code : "";
  const name = e?.constructor?.name ?? "";
  const status = typeof e?.status === "number" ? e.status : undefined;
  const user = auth ? ` of user ${JSON.stringify(auth.username)}` : "";
  if (name === "EtcdAuthenticationFailedError" || /authentication failed/i.test(msg))
    return `rejected the credentials${user} (check --etcd-username and the password)`;
  if (name === "EtcdPermissionDeniedError" || /permission denied/i.test(msg))
    return auth
      ? `denied user ${JSON.stringify(auth.username)} read access to the prefix (grant it a role that can read it)`
      : "requires authentication (pass --etcd-username and the password)";
  if (status === 401 || /user name is empty|requires authentication|insufficient credentials/i.test(msg))
    return auth
      ? `rejected the credentials${user} (check --etcd-username and the password)`
      : "requires authentication (pass --etcd-username and the password)";
  if (code === "ECONNREFUSED" || /ECONNREFUSED/.test(msg)) return "refused the connection";
  if (
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN" ||
    /ENOTFOUND|EAI_AGAIN|name resolution failed|DNS resolution failed/i.test(msg)
  )
    return "has a host name that does not resolve (check --etcd-endpoints)";
  if (/EHOSTUNREACH|ENETUNREACH/.test(code + msg)) return "cannot be reached (no route to the host)";
  if (/wrong version number|packet length too long|http_request|EPROTO/i.test(code + msg))
    return "does not speak the protocol the URL names (check http:// against https://)";
  if (/self[- ]signed|unable to verify|local issuer|certificate|CERT_|altname/i.test(code + msg))
    return "presented a certificate that is not trusted (pass --etcd-cacert with the CA that signed it)";
  if (/ETIMEDOUT|DEADLINE_EXCEEDED|timed? ?out/i.test(code + msg)) return "did not answer in time";
  if (
    name === "EtcdWatchStreamEnded" ||
    code === "ECONNRESET" ||
    code === "EPIPE" ||
    msg === "aborted" ||
    /ECONNRESET|EPIPE|Connection dropped|socket hang up|stream (has )?ended|closed the connection/i.test(msg)
  )
    return "closed the connection";
  if (/circuit ?breaker/i.test(msg)) return "did not answer (recent attempts failed)";
  if (status !== undefined) return `answered HTTP ${status}: ${stripInternals(msg)}`;
  return `failed: ${stripInternals(msg)}`;
}

/** A library message without gRPC codes, empty resolution notes or report-this-bug links. */
function stripInternals(msg: string): string {
  const cleaned = msg
    .split("\n")[0]!
    .replace(/^\d+ [A-Z_]+: /, "")
    .replace(/\.? ?Resolution note: ?[^.]*$/, "")
    .replace(/ Please report this error at \S+/, "")
    .replace(/^etcd answered \d+: /, "")
    .trim();
  return cleaned === "" ? "no reason given" : cleaned;
}

/** A retry delay for a log line: tenths below 10 s, whole seconds above. */
export function formatDelay(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  return s < 10 ? `${Number(s.toFixed(1))}s` : `${Math.round(s)}s`;
}

/** The line an operator reads when etcd fails: "etcd at URL refused the connection; retrying in 2s; serving ...". */
export function describeEtcdError(
  error: unknown,
  url: string,
  retryMs: number,
  auth?: { readonly username: string },
): string {
  return outageLine(url, etcdFailure(error, auth), retryMs);
}

/**
 * Which configured endpoint an error is about: the only one, the one whose host:port the message names (gRPC says
 * "connect ECONNREFUSED 127.0.0.1:2379"), else all of them.
 */
export function failedEndpoint(error: unknown, endpoints: readonly string[]): string {
  if (endpoints.length === 1) return endpoints[0]!;
  const msg = (error as Error | null)?.message ?? "";
  const hit = endpoints.find((e) => URL.canParse(e) && msg.includes(new URL(e).host));
  return hit ?? endpoints.join(", ");
}

/** The log line for a failure already put in words (`what` follows "etcd at URL"). */
export function outageLine(url: string, what: string, retryMs: number): string {
  return `etcd at ${url} ${what}; retrying in ${formatDelay(retryMs)}; serving the last known endpoints`;
}
