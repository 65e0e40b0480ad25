import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { BackendSet } from "../model/backends.js";
import type { Problem } from "../model/problem.js";
import { renderNginxConf } from "../render/index.js";
import { loadBackendsFile, loadServicesFile } from "../sources/services-file.js";
import { prepareStateDir, writeRendered } from "../nginx/files.js";
import { findNginx } from "../nginx/binary.js";
import { chooseEndpointsMode, type WantedEndpointsMode } from "../nginx/endpoints-mode.js";
import { chooseRoutesMode } from "../nginx/routes-mode.js";
import { nginxPaths, runRenderOptions, type NginxSettings } from "../nginx/render-options.js";
import { ensureTlsPlaceholder, makeTlsPlaceholder } from "../nginx/tls-placeholder.js";
import { resolveWorkerUser } from "../nginx/worker-user.js";
import { nginxFlagProblems } from "./nginx-flags.js";
import { EXIT_INVALID, EXIT_USAGE, printProblems, unreadable } from "./report.js";

export interface RenderFlags {
  services: string;
  backends?: string;
  out?: string;
  dir?: string;
  /** dynamic, reload, or auto (the default): what `run` would choose on this machine. */
  endpointsMode?: string;
  /** `--routes-mode dynamic|reload`, as `run`'s (default: what `run` would choose here). */
  routesMode?: string;
  /** The nginx binary whose Lua support decides `auto`, as `run --nginx` takes it. */
  nginx?: string;
  /** As `run` takes them: they shape nginx.conf. Without --control-port a placeholder stands in. */
  listenHost?: string;
  workerProcesses?: string;
  controlPort?: string;
  nginxUser?: string;
}

const MODES: readonly WantedEndpointsMode[] = ["dynamic", "reload", "auto"];

/**
 * Stand-ins for what `run` keeps in its state dir (state.json): the push token is a secret render never reads, and
 * the control port is chosen once per state dir. Both pass the renderer's grammar; the output says they are stand-ins.
 */
export const PLACEHOLDER_PUSH_TOKEN = "0".repeat(32);
export const PLACEHOLDER_CONTROL_PORT = 1;

/**
 * Comment lines heading the output (nginx.conf comments): the mode rendered and why, and the placeholders standing in
 * for what `run` keeps in its state dir.
 */
/** The routes mode rendered, and why: the header's second line. */
interface RoutesLine {
  readonly mode: "dynamic" | "reload";
  readonly why: string;
}

function header(mode: "dynamic" | "reload", why: string, routes: RoutesLine, portGiven: boolean): string {
  const stand = [
    ...(portGiven ? [] : [`control port ${PLACEHOLDER_CONTROL_PORT}`]),
    ...(mode === "dynamic" ? [`push token ${PLACEHOLDER_PUSH_TOKEN}`] : []),
  ];
  const lines = [
    `# nginx-lb render: endpoints mode ${mode} (${why.replace(/[\r\n]+/g, " ")}); --endpoints-mode to choose.`,
    `# nginx-lb render: routes mode ${routes.mode} (${routes.why.replace(/[\r\n]+/g, " ")}); --routes-mode to choose.`,
  ];
  if (stand.length > 0)
    lines.push(
      `# Placeholder${stand.length > 1 ? "s" : ""}: ${stand.join(" and ")} stand${stand.length > 1 ? "" : "s"} in for ` +
        `what nginx-lb run keeps in its state dir${mode === "dynamic" ? " (render never reads the secret); anyone on this machine could push endpoints with this token: do not serve this file as it is" : ""}.`,
    );
  return `${lines.join("\n")}\n`;
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
 * `nginx-lb render`: prints nginx.conf as `run` would serve it (the same endpoints mode unless --endpoints-mode says
 * otherwise; placeholders for the state dir's port and secret), or writes it and its files into --out. Exit 1 for
 * invalid input, 2 for a usage error (a flag nginx.conf cannot hold, --out naming a file, an input file that cannot be
 * read).
 */
export async function renderCommand(flags: RenderFlags): Promise<number> {
  const wanted = MODES.find((m) => m === (flags.endpointsMode ?? "auto"));
  if (wanted === undefined) {
    console.error(`error: render: --endpoints-mode: must be one of ${MODES.join(", ")}`);
    return EXIT_USAGE;
  }
  const routesWanted = flags.routesMode;
  if (routesWanted !== undefined && routesWanted !== "reload" && routesWanted !== "dynamic") {
    console.error("error: render: --routes-mode: must be one of dynamic, reload");
    return EXIT_USAGE;
  }
  const dirFlag = flags.out ? "--out" : "--dir";
  const dir = resolve(flags.out ?? flags.dir ?? "/var/lib/nginx-lb");
  const { listenHost, workerProcesses, controlPort } = flags;
  const bad = nginxFlagProblems({ stateDir: dir, listenHost, workerProcesses, controlPort }, dirFlag);
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

  // The same decision `run` makes, so the output is what `run` would serve here.
  const nginx = findNginx(flags.nginx);
  const choice = await chooseEndpointsMode(wanted, nginx);
  if (!choice.ok)
    console.error(`warning: render: nginx-lb run would refuse this mode here: ${choice.reason}; rendered anyway`);
  const mode = choice.ok ? choice.mode : choice.wanted;
  const routes = chooseRoutesMode(routesWanted, { wanted, mode });
  if (!routes.ok) {
    console.error(`error: render: ${routes.reason} (nginx-lb run refuses it here)`);
    return EXIT_USAGE;
  }
  const routesMode = routes.mode;
  const routesWhy =
    routesWanted !== undefined
      ? "as asked"
      : routes.fallback !== undefined
        ? `what nginx-lb run chooses here: ${routes.fallback}`
        : "what nginx-lb run chooses with dynamic endpoints";
  const why = !choice.ok
    ? "as asked; nginx here cannot load the Lua module"
    : wanted !== "auto"
      ? "as asked"
      : choice.fallback !== undefined
        ? `what nginx-lb run chooses here: ${choice.fallback}`
        : "what nginx-lb run chooses here: nginx loads the Lua module";
  const worker = await resolveWorkerUser(flags.nginxUser);
  if (!worker.ok) {
    printProblems("render", worker.errors, [], null);
    return EXIT_USAGE;
  }
  // As `run`: routes pushed means certificates pushed, with the state dir's placeholder certificate (kept in the
  // --out dir as run keeps it; a throwaway one for a preview on stdout, which writes nothing).
  let certs: Pick<NginxSettings, "certsMode" | "tlsPlaceholder"> = {};
  if (routesMode === "dynamic") {
    if (flags.out) await prepareStateDir(dir).catch(() => undefined);
    const made = flags.out ? await ensureTlsPlaceholder(dir) : { ok: true as const, ...makeTlsPlaceholder() };
    if (!made.ok) {
      console.error(`error: render: --out: ${made.error}`);
      return EXIT_INVALID;
    }
    certs = { certsMode: "pushed", tlsPlaceholder: { cert: made.cert, key: made.key } };
  }
  // The same function `run` renders with, so the output is what `run` would serve (placeholders for its secrets).
  const options = runRenderOptions(nginxPaths(dir, nginx), {
    ...certs,
    controlPort: controlPort ? Number(controlPort) : PLACEHOLDER_CONTROL_PORT,
    pushToken: PLACEHOLDER_PUSH_TOKEN,
    endpointsMode: mode,
    routesMode,
    ...(worker.value ? { user: { name: worker.value.name, group: worker.value.group } } : {}),
    ...(listenHost ? { listenHost } : {}),
    ...(workerProcesses ? { workerProcesses: workerProcesses === "auto" ? "auto" : Number(workerProcesses) } : {}),
  });
  const plain = renderNginxConf({ services: services.value, backends }, options);
  const rendered = {
    ...plain,
    conf: `${header(mode, why, { mode: routesMode, why: routesWhy }, controlPort !== undefined)}${plain.conf}`,
  };
  if (!flags.out) {
    process.stdout.write(rendered.conf);
    return 0;
  }
  try {
    const conf = await writeRendered(dir, rendered);
    console.error(`wrote ${conf} and ${rendered.files.length} files beside it (generation ${rendered.generation})`);
    return 0;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "EACCES" || err.code === "EPERM" ? "permission denied: check who owns it" : err.code;
    console.error(`error: render: --out: cannot write into ${dir} (${why ?? err.message})`);
    return EXIT_INVALID;
  }
}
