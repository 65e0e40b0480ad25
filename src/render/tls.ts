import type { Server } from "../model/services.js";
import { fnv1a64 } from "./hash.js";
import type { RenderedFile } from "./options.js";
import { tok } from "./tokens.js";

/** Where a server's certificate and key live, relative to the state dir; named by content so a change is a new file. */
export function tlsFiles(server: Server): { cert: RenderedFile; key: RenderedFile } | null {
  if (!server.tls) return null;
  const stem = `tls/${tok.domain(server.domain).replace("*", "_wildcard")}-${tok.port(server.tls.port)}-${fnv1a64(server.tls.certificate + server.tls.key)}`;
  const pem = (s: string) => (s.endsWith("\n") ? s : `${s}\n`);
  return {
    cert: { path: `${stem}.crt`, content: pem(server.tls.certificate), mode: 0o600 },
    key: { path: `${stem}.key`, content: pem(server.tls.key), mode: 0o600 },
  };
}
