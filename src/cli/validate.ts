import { loadServicesFile } from "../sources/services-file.js";
import { exitCodeFor, printProblems } from "./report.js";

/**
 * `nginx-lb validate FILE`: exit 0 when valid (warnings on stderr), 1 with every error on stderr, 2 when FILE cannot
 * be read (missing, a directory, unreadable).
 */
export async function validateCommand(file: string): Promise<number> {
  const r = await loadServicesFile(file);
  printProblems(file, r.ok ? [] : r.errors, r.warnings, "the file is not valid");
  if (!r.ok) return exitCodeFor(r.errors);
  const routes = r.value.servers.reduce((n, s) => n + s.routes.length, 0);
  console.error(`${file}: valid (${r.value.servers.length} servers, ${routes} routes)`);
  return 0;
}
