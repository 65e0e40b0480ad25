import { resolve } from "node:path";
import type { BackendSet } from "../model/backends.js";
import { renderNginxConf } from "../render/index.js";
import { loadBackendsFile, loadServicesFile } from "../sources/services-file.js";
import { writeRendered } from "../nginx/files.js";
import { nginxFlagProblems } from "./nginx-flags.js";
import { printProblems } from "./report.js";

export interface RenderFlags {
  services: string;
  backends?: string;
  out?: string;
  dir?: string;
}

/** `nginx-lb render`: prints nginx.conf, or writes it and its TLS files into --out. */
export async function renderCommand(flags: RenderFlags): Promise<number> {
  const services = await loadServicesFile(flags.services);
  printProblems(flags.services, services.ok ? [] : services.errors, services.warnings);
  let backends: BackendSet = {};
  if (flags.backends) {
    const b = await loadBackendsFile(flags.backends);
    printProblems(flags.backends, b.ok ? [] : b.errors, b.warnings);
    if (!b.ok) return 1;
    backends = b.value;
  }
  if (!services.ok) return 1;
  const dir = resolve(flags.out ?? flags.dir ?? "/var/lib/nginx-lb");
  const bad = nginxFlagProblems({ stateDir: dir }, flags.out ? "--out" : "--dir");
  if (bad.length > 0) {
    printProblems("render", bad, []);
    return 1;
  }
  const rendered = renderNginxConf({ services: services.value, backends }, { dir });
  if (flags.out) {
    const conf = await writeRendered(dir, rendered);
    console.error(`wrote ${conf} and ${rendered.files.length} TLS files (generation ${rendered.generation})`);
  } else process.stdout.write(rendered.conf);
  return 0;
}
