/** The machine and versions a run is quoted with: figures mean little without them. */
import { spawnSync } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import { NGINX } from "./static-nginx.js";

export interface Machine {
  readonly date: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
  readonly nginx: string;
  readonly etcd: string;
  readonly wrk: string;
  /** 1-minute load average at the start and end: how shared the machine was while measuring. */
  readonly loadStart: number;
  loadEnd: number;
}

function version(cmd: string, args: string[], re: RegExp): string {
  // `nginx -v` and `wrk --version` print on stderr, and wrk exits 1: read both streams, ignore the status.
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  if (r.error) return "not installed";
  const out = `${r.stdout}${r.stderr}`;
  return re.exec(out)?.[1] ?? out.trim().split("\n")[0] ?? "unknown";
}

export function machine(): Machine {
  return {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: version("uname", ["-r"], /^(\S+)/),
    node: process.version,
    nginx: version(NGINX, ["-v"], /nginx\/(\S+)/),
    etcd: version("etcd", ["--version"], /etcd Version: (\S+)/),
    wrk: version("wrk", ["--version"], /wrk (\S+)/),
    loadStart: loadavg()[0] ?? NaN,
    loadEnd: NaN,
  };
}
