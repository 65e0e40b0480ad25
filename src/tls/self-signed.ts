import { createPublicKey, sign, type KeyObject } from "node:crypto";

/**
 * A self-signed X.509 certificate for an EC P-256 key, written out in DER by hand: Node can make keys and signatures
 * but not certificates, and nginx-lb needs one certificate nobody is shown (the placeholder nginx requires at start
 * for a TLS server whose real certificates are pushed) without depending on the `openssl` CLI at run time.
 * Pure: the key, serial and time come in.
 */

function der(tag: number, content: Buffer): Buffer {
  const n = content.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

const seq = (...parts: Buffer[]) => der(0x30, Buffer.concat(parts));

function integer(bytes: Buffer): Buffer {
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && ((b[1] ?? 0) & 0x80) === 0) b = b.subarray(1);
  return der(0x02, (b[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

function oid(text: string): Buffer {
  const [a = 0, b = 0, ...rest] = text.split(".").map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const group = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) group.unshift(0x80 | (x & 0x7f));
    out.push(...group);
  }
  return der(0x06, Buffer.from(out));
}

function name(cn: string): Buffer {
  return seq(der(0x31, seq(oid("2.5.4.3"), der(0x0c, Buffer.from(cn, "utf8")))));
}

/** UTCTime up to 2049, GeneralizedTime from 2050, as RFC 5280 asks. */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  return d.getUTCFullYear() < 2050
    ? der(0x17, Buffer.from(`${iso.slice(2)}Z`, "ascii"))
    : der(0x18, Buffer.from(`${iso}Z`, "ascii"));
}

/** RFC 5280's "no well-defined expiration date". */
const NO_EXPIRY = der(0x18, Buffer.from("99991231235959Z", "ascii"));
const ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"));

function pem(label: string, body: Buffer): string {
  const b64 = body.toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END ${label}-----\n`;
}

/**
 * A certificate for `key` (an EC P-256 private key), subject and issuer CN=`cn`, valid from `now` with no expiry,
 * and the key, both PEM.
 */
export function selfSignedPem(key: KeyObject, cn: string, serial: Buffer, now: Date): { cert: string; key: string } {
  const spki = createPublicKey(key).export({ type: "spki", format: "der" });
  const tbs = seq(
    der(0xa0, integer(Buffer.from([2]))),
    integer(Buffer.concat([Buffer.from([0x01]), serial])),
    ECDSA_SHA256,
    name(cn),
    seq(time(now), NO_EXPIRY),
    name(cn),
    spki,
  );
  const signature = sign("sha256", tbs, key);
  const cert = seq(tbs, ECDSA_SHA256, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  return { cert: pem("CERTIFICATE", cert), key: key.export({ type: "pkcs8", format: "pem" }).toString() };
}
