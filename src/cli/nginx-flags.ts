import { resolve } from "node:path";
import type { Problem } from "../model/problem.js";
import { tok } from "../render/tokens.js";

/** The flags of `run` and `render` that end up in nginx.conf. */
export interface NginxFlags {
  stateDir?: string;
  listenHost?: string;
  controlPort?: string;
  workerProcesses?: string;
}

/**
 * The flags that end up in nginx.conf, checked with the renderer's own grammar: a typo is an error naming its flag
 * now, rather than a RenderBug on every apply of a daemon that serves nothing.
 */
export function nginxFlagProblems(flags: NginxFlags, dirFlag = "--state-dir"): Problem[] {
  const problems: Problem[] = [];
  const check = (path: string, given: string | undefined, emit: (v: string) => unknown, message: string) => {
    if (!given) return;
    try {
      emit(given);
    } catch {
      problems.push({ code: "invalid_flag", path, message: `${message}, got ${JSON.stringify(given)}` });
    }
  };
  check(dirFlag, flags.stateDir, (v) => tok.file(resolve(v)), "must be a path of A-Z a-z 0-9 . _ / @ + -");
  check("--listen-host", flags.listenHost, (v) => tok.listen(v, 1), "must be an IPv4 or IPv6 address, or *");
  check(
    "--control-port",
    flags.controlPort,
    (v) => tok.port(/^\d+$/.test(v) ? Number(v) : NaN),
    "must be a port 1-65535",
  );
  check(
    "--worker-processes",
    flags.workerProcesses,
    (v) => v === "auto" || tok.int(/^[1-9]\d*$/.test(v) ? Number(v) : NaN),
    "must be auto or a number of processes",
  );
  return problems;
}
