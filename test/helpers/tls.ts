/**
 * Test certificates made at run time with the `openssl` CLI, so no test depends on a key checked into the tree or on
 * today's date:
 *
 *   const ca = await makeCa(dir);                                        // { cert, key } PEM
 *   const leaf = await makeLeaf(ca, dir, { names: ["a.test", "*.a.test"] });
 *   await makeLeaf(ca, dir, { names: ["weak.test"], rsaBits: 1024 });    // "ee key too small" for OpenSSL 3
 *   await makeLeaf(ca, dir, { names: ["old.test"], notBefore: "20200101000000Z", notAfter: "20210101000000Z" });
 */
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface Pem {
  readonly cert: string;
  readonly key: string;
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile("openssl", args, { cwd, timeout: 30_000 }, (err, _out, stderr) =>
      err ? reject(new Error(`openssl ${args.join(" ")}: ${stderr}`)) : resolve(),
    ),
  );
}

let serial = 0;
const stamp = () => `${process.pid}-${Date.now()}-${++serial}`;

async function newKey(dir: string, file: string, rsaBits?: number): Promise<void> {
  if (rsaBits)
    await openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${rsaBits}`, "-out", file], dir);
  else await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file], dir);
}

/** A self-signed CA (EC P-256, ten years). */
export async function makeCa(dir: string, cn = "nginx-lb test CA"): Promise<Pem> {
  await mkdir(dir, { recursive: true });
  const s = stamp();
  await newKey(dir, `ca-${s}.key`);
  await openssl(
    ["req", "-x509", "-new", "-key", `ca-${s}.key`, "-subj", `/CN=${cn}`, "-days", "3650", "-out", `ca-${s}.crt`],
    dir,
  );
  return {
    cert: await readFile(join(dir, `ca-${s}.crt`), "utf8"),
    key: await readFile(join(dir, `ca-${s}.key`), "utf8"),
  };
}

export interface LeafOptions {
  /** DNS names; the first is also the CN. */
  readonly names: readonly string[];
  /** An RSA key of this size instead of EC P-256 (1024 makes the key OpenSSL 3 refuses). */
  readonly rsaBits?: number;
  /** Validity as openssl writes it, `YYYYMMDDHHMMSSZ`. Default: from yesterday for 30 days. */
  readonly notBefore?: string;
  readonly notAfter?: string;
}

const asn1Time = (d: Date) => `${d.toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;

/** A leaf certificate for `names`, signed by `ca`, with explicit validity dates (possibly in the past). */
export async function makeLeaf(ca: Pem, dir: string, options: LeafOptions): Promise<Pem> {
  const s = stamp();
  const work = join(dir, `leaf-${s}`);
  await mkdir(join(work, "new"), { recursive: true });
  await writeFile(join(work, "ca.crt"), ca.cert);
  await writeFile(join(work, "ca.key"), ca.key);
  await writeFile(join(work, "index.txt"), "");
  const san = options.names.map((n) => `DNS:${n}`).join(",");
  // `openssl ca` is the one CLI path that takes arbitrary start and end dates (x509 -req only takes -days).
  await writeFile(
    join(work, "ca.cnf"),
    [
      "[ca]",
      "default_ca = test",
      "[test]",
      "database = index.txt",
      "new_certs_dir = new",
      "serial = serial",
      "default_md = sha256",
      "policy = any",
      "copy_extensions = none",
      "unique_subject = no",
      "x509_extensions = leaf",
      "[any]",
      "commonName = supplied",
      "[leaf]",
      "basicConstraints = CA:FALSE",
      "keyUsage = digitalSignature, keyEncipherment",
      "extendedKeyUsage = serverAuth",
      `subjectAltName = ${san}`,
      "",
    ].join("\n"),
  );
  await writeFile(join(work, "serial"), `${Date.now().toString(16).padStart(16, "0")}\n`);
  await newKey(work, "leaf.key", options.rsaBits);
  await openssl(
    ["req", "-new", "-key", "leaf.key", "-subj", `/CN=${options.names[0] ?? "test"}`, "-out", "leaf.csr"],
    work,
  );
  const now = Date.now();
  await openssl(
    [
      "ca",
      "-batch",
      "-notext",
      "-config",
      "ca.cnf",
      "-cert",
      "ca.crt",
      "-keyfile",
      "ca.key",
      "-in",
      "leaf.csr",
      "-out",
      "leaf.crt",
      "-startdate",
      options.notBefore ?? asn1Time(new Date(now - 86_400_000)),
      "-enddate",
      options.notAfter ?? asn1Time(new Date(now + 30 * 86_400_000)),
    ],
    work,
  );
  return { cert: await readFile(join(work, "leaf.crt"), "utf8"), key: await readFile(join(work, "leaf.key"), "utf8") };
}
