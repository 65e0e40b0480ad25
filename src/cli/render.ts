import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { BackendSet } from "../model/backends.js";
import type { Problem } from "../model/problem.js";
import { renderNginxConf } from "../render/index.js";
import { loadBackendsFile, loadServicesFile } from "../sources/services-file.js";
import { writeRendered } from "../nginx/files.js";
import { nginxFlagProblems } from "./nginx-flags.js";
import { EXIT_INVALID, EXIT_USAGE, printProblems, unreadable } from "./report.js";

export interface RenderFlags {
  services: string;
  backends?: string;
  out?: string;
  dir?: string;
}

/** `--out` must name a directory or nothing yet (it is created); a file there is a usage error, found before work. */
async function outProblem(out: string): Promise<Problem | null> {
  try {
    const s = await stat(out);
    return s.isDirectory()
      ? null
      : {
          code: "invalid_flag",
          path: "--out",
          message: `${out} is a file, not a directory: give a directory (it is created if missing)`,
        };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    if (code === "ENOTDIR")
      return { code: "invalid_flag", path: "--out", message: `a part of ${out} is a file, not a directory` };
    return { code: "invalid_flag", path: "--out", message: `${out} cannot be inspected (${code ?? String(e)})` };
  }
}

/**
 * `nginx-lb render`: prints nginx.conf, or writes it and its TLS files into --out. Exit 1 for invalid input, 2 for a
 * usage error (a flag nginx.conf cannot hold, --out naming a file, an input file that cannot be read).
 */
export async function renderCommand(flags: RenderFlags): Promise<number> {
  const dirFlag = flags.out ? "--out" : "--dir";
  const dir = resolve(flags.out ?? flags.dir ?? "/var/lib/nginx-lb");
  const bad = nginxFlagProblems({ stateDir: dir }, dirFlag);
  const out = flags.out ? await outProblem(dir) : null;
  if (bad.length > 0 || out) {
    printProblems("render", [...bad, ...(out ? [out] : [])], [], null);
    return EXIT_USAGE;
  }

  const services = await loadServicesFile(flags.services);
  printProblems(flags.services, services.ok ? [] : services.errors, services.warnings);
  let backends: BackendSet = {};
  let backendErrors: readonly Problem[] = [];
  if (flags.backends) {
    const b = await loadBackendsFile(flags.backends);
    printProblems(flags.backends, b.ok ? [] : b.errors, b.warnings);
    if (b.ok) backends = b.value;
    else backendErrors = b.errors;
  }
  if (!services.ok || backendErrors.length > 0)
    return unreadable(services.ok ? [] : services.errors) || unreadable(backendErrors) ? EXIT_USAGE : EXIT_INVALID;

  const rendered = renderNginxConf({ services: services.value, backends }, { dir });
  if (!flags.out) {
    process.stdout.write(rendered.conf);
    return 0;
  }
  try {
    const conf = await writeRendered(dir, rendered);
    console.error(`wrote ${conf} and ${rendered.files.length} TLS files (generation ${rendered.generation})`);
    return 0;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "EACCES" || err.code === "EPERM" ? "permission denied: check who owns it" : err.code;
    console.error(`error: render: --out: cannot write into ${dir} (${why ?? err.message})`);
    return EXIT_INVALID;
  }
}
