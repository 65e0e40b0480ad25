/**
 * A real etcd for tests: its own temp data dir and free 127.0.0.1 ports, stoppable and restartable on the same dir and
 * ports, with an `etcdctl` wrapper (v3 or v2 API), TLS (certificates made with openssl) and auth helpers.
 *
 *   const etcd = await startEtcd({ v2: true });        // in beforeAll
 *   await etcd.ctl(["put", "/lb/backends/a-b/ips/10.0.0.1", '{"weight":5}']);
 *   await etcd.stop(); await etcd.start();             // same data, same ports
 *   const snap = await etcd.snapshot();                 // etcdctl snapshot save
 *   await etcd.restore(snap);                           // stop, restore into a new data dir, start on the same URLs
 *   await etcd.rebuild({ newCluster: true });           // stop, wipe, start empty (another cluster id)
 *   etcd.pause(); etcd.resume();                        // SIGSTOP / SIGCONT: connections open, nothing answered
 *   await etcd.destroy();                              // in afterAll: stops it and removes the dir
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./nginx.js";

export { freePort } from "./nginx.js";
export { waitFor } from "./wait.js";
export { startEtcdCluster, type EtcdCluster } from "./etcd-cluster.js";

const run = promisify(execFile);

/** Paths of the PEM files a TLS etcd was started with; `clientCert`/`clientKey` are signed by the same CA. */
export interface EtcdTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

export interface EtcdOptions {
  /** Serve the v2 HTTP API too (`--enable-v2`). */
  readonly v2?: boolean;
  /** Serve clients over TLS with certificates made for the test; `clientCertAuth` also demands a client certificate. */
  readonly tls?: boolean | { readonly clientCertAuth?: boolean };
}

export interface CtlOptions {
  readonly api?: 2 | 3;
  /** `user:password` for an etcd with auth enabled. */
  readonly user?: string;
  /** Accept a non-zero exit (the result then carries it) instead of throwing. */
  readonly allowFail?: boolean;
}

export interface EtcdServer {
  /** Client URL, e.g. `http://127.0.0.1:41234` (https with TLS). */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly tls: EtcdTls | undefined;
  /** Starts etcd again on the same data dir and ports; resolves when it answers. */
  start(): Promise<void>;
  /** Stops etcd (SIGTERM, then SIGKILL after 5 s); resolves when the process is gone. */
  stop(): Promise<void>;
  /** Runs etcdctl against this server; resolves with its stdout, rejects with stderr on a non-zero exit. */
  ctl(args: readonly string[], options?: CtlOptions): Promise<{ stdout: string; stderr: string; code: number }>;
  /** The current store revision (v3). */
  revision(options?: CtlOptions): Promise<number>;
  /** Compacts the v3 history up to the current revision, so older watch revisions are gone. */
  compact(options?: CtlOptions): Promise<number>;
  /** Adds user `root` with this password and enables auth (v3 API, or the separate v2 auth store with api 2). */
  enableAuth(password: string, api?: 2 | 3): Promise<void>;
  /** Saves a v3 snapshot (`etcdctl snapshot save`) into the server's temp dir; resolves with its path. */
  snapshot(): Promise<string>;
  /**
   * Stops etcd, restores `file` into a fresh data dir (`etcdctl snapshot restore`; the v2 store is not in a v3
   * snapshot, so v2 keys are gone) and starts it on the same URLs. `newCluster` gives it another cluster id.
   */
  restore(file: string, options?: { newCluster?: boolean }): Promise<void>;
  /** Stops etcd, removes its data and starts it empty on the same URLs; `newCluster` gives it another cluster id. */
  rebuild(options?: { newCluster?: boolean }): Promise<void>;
  /** Freezes etcd (SIGSTOP): connections are accepted by the kernel but never answered. */
  pause(): void;
  /** Thaws a paused etcd (SIGCONT). */
  resume(): void;
  /** The cluster id etcd reports (hex, as in the v2 X-Etcd-Cluster-Id header). */
  clusterId(): Promise<string>;
  /** Stops etcd and removes its directory. */
  destroy(): Promise<void>;
}

/** Makes a CA, a server certificate for 127.0.0.1/localhost and a client certificate in `dir`. */
export async function makeCertificates(dir: string): Promise<EtcdTls> {
  const p = (f: string) => join(dir, f);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run(
    "openssl",
    ["req", "-x509", ...ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2"].concat([
      "-subj",
      "/CN=nginx-lb test CA",
    ]),
  );
  const leaf = async (name: string, ext: string) => {
    await writeFile(p(`${name}.ext`), ext);
    await run(
      "openssl",
      ["req", "-new", ...ec, "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`)].concat(["-subj", `/CN=${name}`]),
    );
    await run(
      "openssl",
      ["x509", "-req", "-in", p(`${name}.csr`), "-CA", p("ca.crt"), "-CAkey", p("ca.key")].concat([
        "-CAcreateserial",
        "-out",
        p(`${name}.crt`),
        "-days",
        "2",
        "-extfile",
        p(`${name}.ext`),
      ]),
    );
  };
  await leaf("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n");
  await leaf("client", "extendedKeyUsage=clientAuth\n");
  return {
    caFile: p("ca.crt"),
    certFile: p("server.crt"),
    keyFile: p("server.key"),
    clientCertFile: p("client.crt"),
    clientKeyFile: p("client.key"),
  };
}

/** Starts a fresh etcd on free ports in a temp dir and waits until it answers. */
export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const root = await mkdtemp(join(tmpdir(), "nginx-lb-etcd-"));
  const dataDir = join(root, "data");
  const tls = options.tls ? await makeCertificates(root) : undefined;
  const clientCertAuth = typeof options.tls === "object" && options.tls.clientCertAuth === true;
  const scheme = tls ? "https" : "http";
  let clientPort = 0;
  let peerPort = 0;
  // The cluster id derives from the member's name, peer URLs and this token: a new token is another cluster.
  let token = "etcd-cluster";
  let snapshots = 0;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = "";

  const ctl: EtcdServer["ctl"] = async (args, o = {}) => {
    const env = { ...process.env, ETCDCTL_API: String(o.api ?? 3) };
    const flags =
      o.api === 2
        ? [`--endpoints=${endpoint()}`]
        : [`--endpoints=${endpoint()}`, "--dial-timeout=2s", "--command-timeout=5s"];
    if (tls) {
      flags.push(o.api === 2 ? `--ca-file=${tls.caFile}` : `--cacert=${tls.caFile}`);
      flags.push(o.api === 2 ? `--cert-file=${tls.clientCertFile}` : `--cert=${tls.clientCertFile}`);
      flags.push(o.api === 2 ? `--key-file=${tls.clientKeyFile}` : `--key=${tls.clientKeyFile}`);
    }
    if (o.user) flags.push(`--user=${o.user}`);
    try {
      const r = await run("etcdctl", [...flags, ...args], { env, timeout: 20_000, maxBuffer: 64 << 20 });
      return { ...r, code: 0 };
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; code?: number };
      const r = {
        stdout: err.stdout ?? "",
        stderr: err.stderr ?? "",
        code: typeof err.code === "number" ? err.code : 1,
      };
      if (o.allowFail) return r;
      throw new Error(`etcdctl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
    }
  };
  const endpoint = () => `${scheme}://127.0.0.1:${clientPort}`;

  const spawnOnce = async (): Promise<boolean> => {
    const args = [
      "--name=test",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${endpoint()}`,
      `--advertise-client-urls=${endpoint()}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=test=http://127.0.0.1:${peerPort}`,
      `--initial-cluster-token=${token}`,
      "--log-level=error",
      "--logger=zap",
    ];
    if (options.v2) args.push("--enable-v2");
    if (tls) args.push(`--cert-file=${tls.certFile}`, `--key-file=${tls.keyFile}`, `--trusted-ca-file=${tls.caFile}`);
    if (clientCertAuth) args.push("--client-cert-auth");
    log = "";
    const c = spawn("etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    c.stderr?.on("data", (d: Buffer) => {
      log = (log + d.toString()).slice(-4000);
    });
    exited = new Promise((resolve) => c.once("exit", () => resolve()));
    let dead = false;
    void exited.then(() => (dead = true));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !dead) {
      const r = await ctl(["endpoint", "health"], { allowFail: true });
      // With auth on, etcdctl may report "permission denied" for its health probe: the server still answers.
      if (r.code === 0 || /permission denied|user name is empty/i.test(r.stderr)) return true;
      await new Promise((res) => setTimeout(res, 100));
    }
    if (!dead) throw new Error(`etcd did not become healthy in 20 s: ${log}`);
    return false;
  };

  const start = async () => {
    // A port may be taken between finding and binding it (other tests run concurrently): retry with fresh ports,
    // but only before the first start; a restart must keep the ports so clients can reconnect.
    const first = clientPort === 0;
    for (let attempt = 0; attempt < (first ? 5 : 3); attempt++) {
      if (first) {
        clientPort = await freePort();
        peerPort = await freePort();
      }
      if (await spawnOnce()) return;
      await new Promise((res) => setTimeout(res, 200));
    }
    throw new Error(`etcd failed to start: ${log}`);
  };

  const stop = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGTERM");
    c.kill("SIGCONT"); // a paused etcd acts on the SIGTERM only once thawed
    const timer = setTimeout(() => c.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };

  const revision = async (o: CtlOptions = {}) => {
    const r = await ctl(["endpoint", "status", "-w", "json"], o);
    const parsed = JSON.parse(r.stdout) as { Status: { header: { revision: number } } }[];
    return Number(parsed[0]?.Status.header.revision ?? 0);
  };

  const freshToken = (o: { newCluster?: boolean } = {}) => {
    if (o.newCluster) token = `etcd-cluster-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  };

  await start();
  return {
    get endpoint() {
      return endpoint();
    },
    dataDir,
    tls,
    start,
    stop,
    ctl,
    revision,
    compact: async (o = {}) => {
      const rev = await revision(o);
      await ctl(["compaction", "--physical", String(rev)], o);
      return rev;
    },
    enableAuth: async (password, api = 3) => {
      if (api === 2) {
        // etcdctl v2 reads a new password from the terminal only; the v2 HTTP API takes it directly (plain http only).
        const put = async (path: string, body?: unknown) => {
          const r = await fetch(`${endpoint()}${path}`, { method: "PUT", body: body ? JSON.stringify(body) : null });
          if (!r.ok) throw new Error(`PUT ${path}: ${r.status} ${await r.text()}`);
        };
        await put("/v2/auth/users/root", { user: "root", password });
        await put("/v2/auth/enable");
        return;
      }
      await ctl(["user", "add", `root:${password}`]);
      await ctl(["auth", "enable"]);
    },
    snapshot: async () => {
      const file = join(root, `snapshot-${++snapshots}.db`);
      await ctl(["snapshot", "save", file]);
      return file;
    },
    restore: async (file, o = {}) => {
      await stop();
      freshToken(o);
      await rm(dataDir, { recursive: true, force: true });
      // etcdctl 3.4 restores (etcdutl exists from 3.5); the member must match the flags etcd then starts with.
      await run(
        "etcdctl",
        ["snapshot", "restore", file, `--data-dir=${dataDir}`, "--name=test"].concat([
          `--initial-cluster=test=http://127.0.0.1:${peerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
          `--initial-cluster-token=${token}`,
        ]),
        { env: { ...process.env, ETCDCTL_API: "3" }, timeout: 20_000 },
      );
      await start();
    },
    rebuild: async (o = {}) => {
      await stop();
      freshToken(o);
      await rm(dataDir, { recursive: true, force: true });
      await start();
    },
    pause: () => void child?.kill("SIGSTOP"),
    resume: () => void child?.kill("SIGCONT"),
    clusterId: async () => {
      const r = await ctl(["endpoint", "status", "-w", "json"]);
      const parsed = JSON.parse(r.stdout) as { Status: { header: { cluster_id: number | string } } }[];
      // JSON numbers lose precision past 2^53: read the digits as written.
      const digits = /"cluster_id":(\d+)/.exec(r.stdout)?.[1] ?? String(parsed[0]?.Status.header.cluster_id ?? 0);
      return BigInt(digits).toString(16);
    },
    destroy: async () => {
      child?.kill("SIGCONT");
      await stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
