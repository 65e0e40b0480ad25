/**
 * The endpoint registry the benchmark writes to, pluggable so every figure runs against whichever registry this
 * build supports: real etcd (when the etcd v3 source exists) or the embedded backends file (watched).
 */
import { existsSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Etcd3 } from "etcd3";
import type { BackendSet } from "../../src/model/backends.js";
import { freePort, onCleanup, sleep, spawnTracked, stopChild, tempDir } from "./procs.js";

export const PREFIX = "/lb/backends";
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export type RegistryKind = "etcd" | "file";

export interface Registry {
  readonly kind: RegistryKind;
  /** The `nginx-lb run` flags that point the controller at this registry. */
  readonly args: readonly string[];
  /** Replaces the whole content (set-up between figures, not timed). */
  replace(set: BackendSet): Promise<void>;
  put(name: string, ip: string, weight?: number): Promise<void>;
  del(name: string, ip: string): Promise<void>;
  close(): Promise<void>;
}

/** etcd is usable when this build has the v3 source and Debian's etcd is installed. */
export function etcdSupported(): boolean {
  return existsSync(join(ROOT, "src/sources/etcd-v3.ts")) && existsSync("/usr/bin/etcd");
}

/** The embedded registry: every change rewrites the file and renames it into place, as a config centre would. */
export class FileRegistry implements Registry {
  readonly kind = "file";
  private readonly set: Record<string, Record<string, { weight: number }>> = {};
  private constructor(readonly file: string) {}

  get args(): readonly string[] {
    return ["--backends", this.file];
  }

  static async create(): Promise<FileRegistry> {
    const r = new FileRegistry(join(await tempDir("nginx-lb-bench-reg-"), "backends.json"));
    await r.write();
    return r;
  }

  private async write(): Promise<void> {
    await writeFile(`${this.file}.tmp`, JSON.stringify(this.set));
    await rename(`${this.file}.tmp`, this.file);
  }

  async replace(set: BackendSet): Promise<void> {
    for (const k of Object.keys(this.set)) delete this.set[k];
    for (const [name, eps] of Object.entries(set)) this.set[name] = { ...eps };
    await this.write();
  }

  async put(name: string, ip: string, weight = 1): Promise<void> {
    (this.set[name] ??= {})[ip] = { weight };
    await this.write();
  }

  async del(name: string, ip: string): Promise<void> {
    const eps = this.set[name];
    if (eps) delete eps[ip];
    if (eps && Object.keys(eps).length === 0) delete this.set[name];
    await this.write();
  }

  async close(): Promise<void> {}
}

/** The run's one etcd server: started on first use, stopped by the benchmark's cleanup. */
let server: Promise<string> | null = null;

async function startEtcd(): Promise<string> {
  const dir = await tempDir("nginx-lb-bench-etcd-");
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const child = spawnTracked("etcd", [
    "--name=bench",
    `--data-dir=${dir}/data`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=bench=${peerUrl}`,
    "--log-level=error",
  ]);
  onCleanup(() => stopChild(child));
  // etcd's own health endpoint, not the client: the etcd3 client backs off for seconds after a refused connect.
  const deadline = Date.now() + 20_000;
  for (;;) {
    const healthy = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) })
      .then(async (r) => r.ok && (await r.text()).includes("true"))
      .catch(() => false);
    if (healthy) return url;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`etcd did not become healthy on ${url}`);
    await sleep(50);
  }
}

let registries = 0;

/**
 * A registry in a real single-member etcd on loopback, written through the etcd3 client. Every registry of a run
 * shares the one server under its own prefix (what a shared etcd looks like in production, and no start-up per
 * figure); closing one deletes its keys.
 */
export class EtcdRegistry implements Registry {
  readonly kind = "etcd";
  private constructor(
    private readonly url: string,
    private readonly prefix: string,
    private readonly client: Etcd3,
  ) {}

  get args(): readonly string[] {
    return ["--etcd-endpoints", this.url, "--etcd-prefix", this.prefix];
  }

  static async create(): Promise<EtcdRegistry> {
    server ??= startEtcd();
    const url = await server;
    return new EtcdRegistry(url, `${PREFIX}-bench${++registries}`, new Etcd3({ hosts: url }));
  }

  private key(name: string, ip: string): string {
    return `${this.prefix}/${name}/ips/${ip}`;
  }

  async replace(set: BackendSet): Promise<void> {
    await this.client.delete().prefix(`${this.prefix}/`);
    const entries = Object.entries(set).flatMap(([name, eps]) =>
      Object.entries(eps).map(([ip, ep]) => [this.key(name, ip), JSON.stringify(ep)] as const),
    );
    // etcd caps a transaction at 128 operations by default.
    for (let i = 0; i < entries.length; i += 100) {
      // A key never written has version 0, so this condition always holds: an unconditional transaction.
      const batch = this.client.if("/nginx-lb-bench/never-written", "Version", "<", 1);
      await batch.then(...entries.slice(i, i + 100).map(([k, v]) => this.client.put(k).value(v))).commit();
    }
  }

  async put(name: string, ip: string, weight = 1): Promise<void> {
    await this.client.put(this.key(name, ip)).value(JSON.stringify({ weight }));
  }

  async del(name: string, ip: string): Promise<void> {
    await this.client.delete().key(this.key(name, ip));
  }

  async close(): Promise<void> {
    await this.client
      .delete()
      .prefix(`${this.prefix}/`)
      .catch(() => undefined);
    this.client.close();
  }
}

export async function createRegistry(kind: RegistryKind): Promise<Registry> {
  return kind === "etcd" ? EtcdRegistry.create() : FileRegistry.create();
}
