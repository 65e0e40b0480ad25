/**
 * Commands run as a local attacker: the unprivileged `nobody:nogroup`, no supplementary groups (tests run as root).
 *
 *   const r = await asNobody("cat", "/var/lib/nginx-lb/state.json");   // r.code !== 0: refused
 *   const s = await asNobodyShell('echo x >> "$1"', file);             // a shell script with positional args
 */
import { execFile } from "node:child_process";

export interface Outcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const SETPRIV = ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"];

/** Runs `cmd args...` as nobody from `/` (bounded: 20 s); resolves with its exit code and output, never rejects. */
export function asNobody(cmd: string, ...args: string[]): Promise<Outcome> {
  return new Promise((resolve) =>
    execFile("setpriv", [...SETPRIV, cmd, ...args], { cwd: "/", timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

/** Runs a bash script as nobody with positional arguments `$1...`. */
export function asNobodyShell(script: string, ...args: string[]): Promise<Outcome> {
  return asNobody("bash", "-c", script, "bash", ...args);
}
