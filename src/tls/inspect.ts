import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import type { TlsInspector, TlsReport } from "../model/services.js";
import { ENCRYPTED_KEY_MESSAGE, isEncryptedPem } from "../model/schema.js";

type Finding = { field: "ssl_certificate" | "ssl_certificate_key"; message: string };

/** Minimum key sizes OpenSSL 3 accepts at its default security level 2 (112-bit security). */
const MIN_BITS = { rsa: 2048, "rsa-pss": 2048, dsa: 2048, dh: 2048, ec: 224 } as const;
const EC_BITS: Record<string, number> = {
  prime192v1: 192,
  secp192k1: 192,
  secp224r1: 224,
  secp224k1: 224,
  prime256v1: 256,
  secp256k1: 256,
  secp384r1: 384,
  secp521r1: 521,
};

function keyStrength(key: KeyObject): string | null {
  const type: string = key.asymmetricKeyType ?? "unknown";
  const d = key.asymmetricKeyDetails ?? {};
  if (type === "rsa" || type === "rsa-pss" || type === "dsa" || type === "dh") {
    const bits = d.modulusLength ?? 0;
    const min = MIN_BITS[type];
    if (bits < min)
      return `is a ${bits}-bit ${type.toUpperCase()} key; nginx's TLS library (OpenSSL 3, default security level 2) refuses keys under ${min} bits ("ee key too small"): issue a 2048-bit or larger RSA key, or an EC P-256 key`;
  }
  if (type === "ec") {
    const bits = EC_BITS[d.namedCurve ?? ""] ?? 256;
    if (bits < MIN_BITS.ec)
      return `is an EC key on ${d.namedCurve} (${bits} bits); OpenSSL 3 refuses curves under 224 bits: use P-256 or larger`;
  }
  return null;
}

/** Checks a PEM certificate and key as nginx's OpenSSL will: parse, key match, key strength; dates as warnings. */
export function inspectTls(certificate: string, keyPem: string, domain: string, now: Date = new Date()): TlsReport {
  const errors: Finding[] = [];
  const warnings: Finding[] = [];
  let cert: X509Certificate | null = null;
  let key: KeyObject | null = null;
  try {
    cert = new X509Certificate(certificate);
  } catch (e) {
    errors.push({
      field: "ssl_certificate",
      message: `is not a readable PEM X.509 certificate (${(e as Error).message}): paste the whole -----BEGIN CERTIFICATE----- block`,
    });
  }
  try {
    key = createPrivateKey({ key: keyPem, format: "pem" });
  } catch (e) {
    const msg = (e as Error).message;
    errors.push({
      field: "ssl_certificate_key",
      message:
        isEncryptedPem(keyPem) || /passphrase|encrypted/i.test(msg)
          ? ENCRYPTED_KEY_MESSAGE
          : "is not a readable PEM private key: give the -----BEGIN PRIVATE KEY----- block of the certificate's key",
    });
  }
  if (key) {
    const weak = keyStrength(key);
    if (weak) errors.push({ field: "ssl_certificate_key", message: weak });
  }
  if (cert) {
    const weak = keyStrength(cert.publicKey);
    if (weak && !errors.some((e) => e.field === "ssl_certificate_key" && e.message === weak))
      errors.push({ field: "ssl_certificate", message: `has a public key that ${weak}` });
    if (key && !cert.checkPrivateKey(key))
      errors.push({
        field: "ssl_certificate_key",
        message: "does not match ssl_certificate: give the key the certificate was issued for",
      });
    const from = new Date(cert.validFrom);
    const to = new Date(cert.validTo);
    if (now < from)
      warnings.push({
        field: "ssl_certificate",
        message: `is not valid yet: valid from ${from.toISOString()} to ${to.toISOString()}`,
      });
    if (now > to)
      warnings.push({
        field: "ssl_certificate",
        message: `expired on ${to.toISOString()} (valid from ${from.toISOString()}); clients will reject it: renew it`,
      });
    const bare = domain.startsWith("*.") ? `x${domain.slice(1)}` : domain;
    if (cert.checkHost(bare) === undefined)
      warnings.push({
        field: "ssl_certificate",
        message: `does not name ${domain} (subject ${cert.subject.replace(/\n/g, ", ")}); clients will warn`,
      });
  }
  return { errors, warnings };
}

export const nodeTlsInspector: TlsInspector = (c, k, d) => inspectTls(c, k, d);
