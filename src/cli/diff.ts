import { topologyOf } from "../reconciler/topology.js";
import { bindRoutes } from "../render/index.js";
import { loadServicesFile } from "../sources/services-file.js";
import { fetchStatusView, type AdminClientFlags } from "./admin-client.js";
import { diffTopology, formatChange, summarize } from "./diff-view.js";
import { printProblems } from "./report.js";

export interface DiffFlags extends AdminClientFlags {
  services: string;
}

/** Exit codes, as diff(1) and `git diff --exit-code` have them. */
export const DIFF_SAME = 0;
export const DIFF_CHANGES = 1;
/**
 * Nothing was compared: a usage error, a FILE that cannot be read or is invalid, a controller that cannot be asked.
 * An invalid FILE is not "changes" (1): a deploy gate that applies on 1 must not apply a file the controller rejects.
 */
export const DIFF_TROUBLE = 2;

/**
 * `nginx-lb diff --services FILE`: what applying FILE would change in a running controller (servers, routes and their
 * upstreams added, removed, changed), one line each on stdout, a summary on stderr; nothing is applied. FILE's view
 * is computed by the code the controller applies it with (parse, bind, topology); endpoints come from the registry,
 * which applying a routing file leaves alone, so they are not compared.
 */
export async function diffCommand(flags: DiffFlags): Promise<number> {
  const file = await loadServicesFile(flags.services);
  printProblems(
    flags.services,
    file.ok ? [] : file.errors,
    file.warnings,
    "nothing was compared (the controller would refuse this file and keep its routes)",
  );
  if (!file.ok) return DIFF_TROUBLE;
  const running = await fetchStatusView(flags);
  if (!running.ok) {
    console.error(`nginx-lb diff: ${running.why}`);
    return DIFF_TROUBLE;
  }
  // No endpoints: the upstream names and routes do not depend on them, and they are not compared.
  const proposed = topologyOf(file.value, bindRoutes(file.value, {}));
  const changes = diffTopology(running.view.servers, proposed.servers);
  for (const c of changes) process.stdout.write(`${formatChange(c)}\n`);
  if (!running.view.services.valid)
    console.error(
      `nginx-lb diff: the controller's own routing file ${running.view.services.file} is invalid: compared with the routes in force`,
    );
  console.error(`${flags.services}: ${summarize(changes)} against the controller at ${running.url.origin}`);
  return changes.length > 0 ? DIFF_CHANGES : DIFF_SAME;
}
