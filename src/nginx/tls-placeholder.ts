import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { chmod, open, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { selfSignedPem } from "../tls/self-signed.js";

/** The placeholder certificate and key (RenderOptions.tlsPlaceholder), kept in one 0600 file in the state dir. */
export const PLACEHOLDER_FILE = "tls-placeholder.pem";
const CN = "nginx-lb placeholder (never served)";

export type PlaceholderOutcome =
  | { readonly ok: true; readonly cert: string; readonly key: string; readonly created: boolean }
  | { readonly ok: false; readonly error: string };

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----\n[^-]+-----END CERTIFICATE-----\n/;
const KEY_BLOCK = /-----BEGIN PRIVATE KEY-----\n[^-]+-----END PRIVATE KEY-----\n/;

/** The pair in `text` when it is one this module wrote (a certificate and its key), else null. */
function parse(text: string): { cert: string; key: string } | null {
  const cert = CERT_BLOCK.exec(text)?.[0];
  const key = KEY_BLOCK.exec(text)?.[0];
  if (!cert || !key) return null;
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key)) ? { cert, key } : null;
  } catch {
    return null;
  }
}

/** A new placeholder in memory (EC P-256, self-signed, no expiry): what ensureTlsPlaceholder keeps, or a preview. */
export function makeTlsPlaceholder(now: Date = new Date()): { cert: string; key: string } {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return selfSignedPem(privateKey, CN, randomBytes(15), now);
}

/**
 * The state dir's placeholder: nginx requires a certificate at start for every TLS server, even when
 * ssl_certificate_by_lua replaces it in each handshake. Made once (EC P-256, self-signed, no expiry) and kept, so the
 * rendered files, and with them the config generation, stay the same across restarts; made again only when the file
 * is missing or unreadable. Written atomically and 0600 (a private key, though no client ever sees its certificate).
 */
export async function ensureTlsPlaceholder(dir: string, now: Date = new Date()): Promise<PlaceholderOutcome> {
  const path = join(dir, PLACEHOLDER_FILE);
  try {
    const kept = parse(await readFile(path, "utf8"));
    if (kept) {
      if (((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);
      return { ok: true, ...kept, created: false };
    }
  } catch {
    // Missing or unreadable: made below.
  }
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const pair = makeTlsPlaceholder(now);
    await rm(tmp, { force: true });
    // "wx": never write through a file or link someone placed at the temp name.
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(pair.cert + pair.key);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    return { ok: true, ...pair, created: true };
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    return {
      ok: false,
      error:
        `cannot write the TLS placeholder certificate ${path}: ${(e as Error).message}; ` +
        `free space in (or fix the permissions of) the state dir`,
    };
  }
}
