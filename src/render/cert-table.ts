import { createHash } from "node:crypto";
import type { Services } from "../model/services.js";

/**
 * The certificates nginx serves by SNI when they are pushed (certsMode "pushed"), as a table built from the validated
 * model, like the routing table (routes-dynamic.ts): the applier compares two tables by id and pushes what differs.
 * It holds private keys: it goes into the push body and the 0600 start-up file only, never into a log, the status or
 * an API answer.
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

/** The certificates of every TLS server of `services` (validated: one server per TLS port and domain). */
export function certTable(services: Services): CertTable {
  const out = new Map<string, SiteCert>();
  for (const s of services.servers) {
    if (!s.tls) continue;
    const certificate = pem(s.tls.certificate);
    const key = pem(s.tls.key);
    const id = createHash("sha256").update(certificate).update("\0").update(key).digest("hex").slice(0, 16);
    out.set(`${s.tls.port} ${s.domain}`, { port: s.tls.port, name: s.domain, id, certificate, key });
  }
  return out;
}
