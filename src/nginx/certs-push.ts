import { createHash } from "node:crypto";
import { join } from "node:path";
import { formatPath, type Problem } from "../model/problem.js";
import type { Server, Services } from "../model/services.js";
import { CERTS_MAX_BODY_MB, CERTS_PATH, INITIAL_CERTS_FILE } from "../render/tls-dynamic.js";
import { tok } from "../render/tokens.js";
import { inspectTls } from "../tls/inspect.js";
import { controlCall, partialElseWhole, PushError, type PushTarget } from "./endpoints-push.js";
import { writeStartupFile, type InitialSetsOutcome } from "./initial-sets.js";

/**
 * Pushed certificates, the controller's half: the table of every TLS site's certificate and key from the validated
 * model, the push text (src/nginx/lua/nginx_lb_certs.lua documents and checks its grammar), the push itself, and the
 * start-up file a new nginx master loads. Key material goes only into the push body and the 0600 file: never into a
 * message, a log line, the status, argv or a child's environment.
 */

/** One TLS site's certificate: what nginx serves on `port` to an SNI matching `name`. */
export interface SiteCert {
  readonly port: number;
  /** The server's domain as the model holds it (lower case, maybe `*.`). */
  readonly name: string;
  /** 16 hex digits naming this certificate and key: nginx's workers keep each parsed once per id. */
  readonly id: string;
  readonly certificate: string;
  readonly key: string;
}

/** Every TLS site's certificate by `<port> <name>` (the key nginx's dict uses). */
export type CertTable = ReadonlyMap<string, SiteCert>;

const pem = (s: string) => (s.endsWith("\n") ? s : `${s}\n`);

/**
 * The certificates of every TLS server of `services` (validated: one server per TLS port and domain). A site whose
 * certificate and key equal its entry in `previous` keeps that entry (and its id), so a routing change among
 * thousands of TLS sites does not hash every certificate again.
 */
export function certTable(services: Services, previous?: CertTable): CertTable {
  const out = new Map<string, SiteCert>();
  for (const s of services.servers) {
    if (!s.tls) continue;
    const k = `${s.tls.port} ${s.domain}`;
    const certificate = pem(s.tls.certificate);
    const key = pem(s.tls.key);
    const kept = previous?.get(k);
    if (kept && kept.certificate === certificate && kept.key === key) {
      out.set(k, kept);
      continue;
    }
    const id = createHash("sha256").update(certificate).update("\0").update(key).digest("hex").slice(0, 16);
    out.set(k, { port: s.tls.port, name: s.domain, id, certificate, key });
  }
  return out;
}

/**
 * `certTable(services, previous)` given `previous`, the table of `before`, and the splice between the two server lists
 * (serverSplice): the head and tail servers' entries are `previous`'s, taken by position (its entries are the TLS
 * servers' in server order, certTable's order), and only the servers between are looked at. `previous` itself when
 * no server between has TLS on either side.
 */
export function spliceCertTable(
  previous: CertTable,
  before: readonly Server[],
  services: Services,
  cut: { readonly head: number; readonly tail: number },
): CertTable {
  const was = before.slice(cut.head, before.length - cut.tail);
  const now = services.servers.slice(cut.head, services.servers.length - cut.tail);
  if (!was.some((s) => s.tls) && !now.some((s) => s.tls)) return previous;
  let headTls = 0;
  for (let i = 0; i < cut.head; i++) if (before[i]?.tls) headTls++;
  let tailTls = 0;
  for (let i = before.length - cut.tail; i < before.length; i++) if (before[i]?.tls) tailTls++;
  const out = new Map<string, SiteCert>();
  let i = 0;
  for (const [k, v] of previous) if (i++ < headTls) out.set(k, v);
  for (const [k, v] of certTable({ servers: now }, previous)) out.set(k, v);
  i = 0;
  for (const [k, v] of previous) if (i++ >= previous.size - tailTls) out.set(k, v);
  return out;
}

/**
 * The same checks services validation runs on certificates (src/tls/inspect.ts: both parse, the key is the
 * certificate's and strong enough for nginx's OpenSSL), as errors with the JSON path of the field, for a model that
 * was parsed without the inspector. Name and date findings stay warnings there and are not repeated here. Nothing
 * is pushed while any error remains.
 */
export function checkCertificates(services: Services, now: Date = new Date()): Problem[] {
  const problems: Problem[] = [];
  services.servers.forEach((s, i) => {
    if (!s.tls) return;
    for (const e of inspectTls(s.tls.certificate, s.tls.key, s.domain, now).errors)
      problems.push({ code: "tls_invalid", path: formatPath(["servers", i, e.field]), message: e.message });
  });
  return problems;
}

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");

/** A push (whole, or partial with `base`: then `drops` lists the sites that no longer have TLS) at `version`. */
export function encodeCerts(
  version: number,
  sites: Iterable<SiteCert>,
  partial?: { readonly base: number; readonly drops: Iterable<string> },
): string {
  const lines = [
    partial ? `nginx-lb-certs version=${version} base=${partial.base}` : `nginx-lb-certs version=${version}`,
  ];
  let count = 0;
  for (const s of sites) {
    // The model's grammar already holds for both; re-checked since they become dict keys in nginx.
    lines.push(`site ${tok.port(s.port)} ${tok.domain(s.name)} ${s.id} ${b64(s.certificate)} ${b64(s.key)}`);
    count++;
  }
  for (const key of partial?.drops ?? []) {
    const [port = "", name = ""] = key.split(" ");
    lines.push(`drop ${tok.port(Number(port))} ${tok.domain(name)}`);
    count++;
  }
  lines.push(`end sites=${count}`, "");
  return lines.join("\n");
}

/** What differs between what nginx holds and what is wanted: sites to (re)send, and sites to forget. */
export function certChanges(running: CertTable, desired: CertTable): { changed: SiteCert[]; dropped: string[] } {
  const changed: SiteCert[] = [];
  for (const [key, site] of desired) if (running.get(key)?.id !== site.id) changed.push(site);
  const dropped = [...running.keys()].filter((k) => !desired.has(k));
  return { changed, dropped };
}

/**
 * Sends a push text (`encodeCerts`); resolves with the version nginx stored. Refused before sending when it exceeds
 * what the control server accepts. A 409 on a partial push means nginx holds another version: send a whole push.
 */
export async function pushCerts(target: PushTarget, text: string): Promise<number> {
  const max = CERTS_MAX_BODY_MB * 1024 * 1024;
  if (Buffer.byteLength(text) > max)
    throw new PushError(
      0,
      `POST ${CERTS_PATH}: ${Buffer.byteLength(text)} bytes of certificates exceed the ${CERTS_MAX_BODY_MB} MB a push may carry`,
    );
  const { version } = await controlCall(target, "POST", text, CERTS_PATH);
  if (version === null) throw new PushError(200, `POST ${CERTS_PATH}: nginx stored no version`);
  return version;
}

/** The certificates version nginx holds, or null when nothing was pushed or loaded since its dict was created. */
export async function pushedCertsVersion(target: PushTarget): Promise<number | null> {
  return (await controlCall(target, "GET", undefined, CERTS_PATH)).version;
}

/** What the controller last knew nginx to hold; null after a (re)start or a failed push. */
export interface PushedCerts {
  readonly version: number;
  readonly table: CertTable;
}

/**
 * Makes nginx hold `desired`: a partial push of what changed when nginx's certificates are known (`running`), a whole
 * push otherwise or when nginx refuses the partial one (409: it holds another version). Nothing is sent when nothing
 * changed. Throws PushError when nginx cannot be reached or refuses the whole push; the caller retries and treats the
 * state as unknown.
 */
export async function syncCerts(
  target: PushTarget,
  running: PushedCerts | null,
  desired: CertTable,
  nextVersion: number,
): Promise<PushedCerts> {
  const whole = async () => ({
    version: await pushCerts(target, encodeCerts(nextVersion, desired.values())),
    table: desired,
  });
  if (!running) return whole();
  if (running.table === desired) return running;
  const { changed, dropped } = certChanges(running.table, desired);
  if (changed.length === 0 && dropped.length === 0) return running;
  const text = encodeCerts(nextVersion, changed, { base: running.version, drops: dropped });
  return partialElseWhole(async () => ({ version: await pushCerts(target, text), table: desired }), whole);
}

/** What writing the start-up certificates did: the file and its size, or why it could not. */
export type InitialCertsOutcome = InitialSetsOutcome;

/**
 * Keeps the certificates nginx holds in `<dir>/certificates.push` (0600: private keys; the push format), which a new
 * nginx master loads at start so a restart after a crash serves TLS before the next push. Call after each successful
 * push. Written as every start-up file is (writeStartupFile): on failure the old file stays and the outcome says why.
 */
export function writeInitialCerts(dir: string, pushed: PushedCerts): Promise<InitialCertsOutcome> {
  return writeStartupFile(
    join(dir, INITIAL_CERTS_FILE),
    encodeCerts(pushed.version, pushed.table.values()),
    "the start-up certificates",
    "a restarted nginx would refuse TLS handshakes until the next push",
  );
}
