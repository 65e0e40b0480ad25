import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import { parseListen } from "../admin/config.js";
import { resolve } from "node:path";
import type { AdminFlags } from "../admin/index.js";
import type { RunOptions } from "../app.js";
import type { Checked, Problem } from "../model/problem.js";
import { etcdConfigFromFlags, type EtcdFlags } from "./etcd-options.js";
import { nginxFlagProblems } from "./nginx-flags.js";
import { findNginx } from "../nginx/binary.js";
import { parseDuration } from "./duration.js";
import { OUTLIER_DEFAULT_TEXT, parseOutlierFlag } from "./outlier-flag.js";
import { resolveWorkerUser, systemAccounts, type AccountSource } from "../nginx/worker-user.js";

/**
 * The flags of `run` as commander hands them over. Commander fills each from its NGINX_LB_<FLAG> variable when the
 * flag is absent (see main.ts); secrets never come as flags.
 */
export interface RunFlags extends EtcdFlags {
  services?: string;
  backends?: string;
  stateDir?: string;
  nginx?: string;
  listenHost?: string;
  controlPort?: string;
  workerProcesses?: string;
  logLevel?: string;
  watch?: boolean;
  endpointsMode?: string;
  /** `--routes-mode dynamic|reload`: routing changes pushed to nginx's Lua router, or rendered and reloaded. */
  routesMode?: string;
  adminListen?: string;
  /** The removed `--admin-token VALUE`: still parsed, so that using it is a clear usage error. */
  adminToken?: string | boolean;
  adminTokenFile?: string;
  trafficLog?: boolean;
  nginxUser?: string;
  /** HOST:PORT for `/readyz` and `/healthz` alone, without a token; "off" or absent for none. */
  healthListen?: string;
  /** `--access-log FILE|off`: nginx's JSON access log. */
  accessLog?: string;
  /** `--start-timeout`: how long start-up problems that may heal (a held port) are retried before exit 1. */
  startTimeout?: string;
  /** `--services-etcd-prefix KEY`: the routing table from etcd instead of the services file. */
  servicesEtcdPrefix?: string;
  /** `--outlier-ejection errors,first,longest,percent%|off`: passive outlier ejection (dynamic mode). */
  outlierEjection?: string;
}

/** Everything `run` needs, resolved once: nothing after this reads the environment or applies a default. */
export interface RunConfig {
  readonly controller: RunOptions;
  readonly admin: AdminFlags;
  readonly logLevel: string;
}

export const RUN_DEFAULTS = {
  services: "/etc/csphere-services.json",
  stateDir: "/var/lib/nginx-lb",
  endpointsMode: "auto",
  logLevel: "info",
  accessLog: "off",
  startTimeout: "60s",
  outlierEjection: OUTLIER_DEFAULT_TEXT,
} as const;

export { parseDuration };

/**
 * A file `run` needs from its first second: missing or unreadable cannot heal by waiting, so it stops the start with
 * the flag, the file and what to do.
 */
async function readableFile(file: string, flag: string, errors: Problem[]): Promise<void> {
  try {
    await access(file, constants.R_OK);
    if (!(await stat(file)).isFile())
      errors.push({ code: "unreadable", path: flag, message: `${file} is not a file: name the file itself` });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    errors.push({
      code: "unreadable",
      path: flag,
      message:
        code === "ENOENT"
          ? `${file} does not exist: check the path`
          : code === "EACCES"
            ? `${file} cannot be read by this user (uid ${process.getuid?.() ?? "?"}): fix its owner or mode`
            : `${file} cannot be read: ${(e as Error).message}`,
    });
  }
}

/** The nginx binary: an explicit `--nginx` must be an executable file; else one must be found in the usual places. */
async function nginxBinaryProblem(flag: string | undefined, env: Readonly<Record<string, string | undefined>>) {
  const nginx = findNginx(flag);
  const candidates =
    nginx.includes("/") || flag !== undefined
      ? [nginx]
      : (env["PATH"] ?? "").split(":").flatMap((d) => (d === "" ? [] : [`${d}/${nginx}`]));
  for (const file of candidates)
    try {
      await access(file, constants.X_OK);
      // access() grants root X_OK on any file; an nginx without an execute bit could not be run all the same.
      const st = await stat(file);
      if (st.isFile() && (st.mode & 0o111) !== 0) return null;
    } catch {
      // The next candidate.
    }
  return {
    code: "nginx_missing",
    path: "--nginx",
    message:
      flag !== undefined
        ? `${flag} is not an executable file: pass the path of nginx (e.g. /usr/sbin/nginx)`
        : "no nginx found (/usr/sbin/nginx, /usr/local/sbin/nginx, PATH): install it (apt-get install nginx libnginx-mod-http-lua) or pass --nginx",
  } satisfies Problem;
}

export const ADMIN_TOKEN_ENV = "NGINX_LB_ADMIN_TOKEN";
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];
const MODES = ["dynamic", "reload", "auto"] as const;
const ROUTES_MODES = ["dynamic", "reload"] as const;

/** The characters nginx.conf takes in a path without quoting (the `tok.file` grammar), for a clear flag error. */
const NGINX_PATH = /^\/[A-Za-z0-9._/@+-]*$/;

/** `--access-log`: an absolute path nginx can be given as is, or undefined for off. */
function accessLogPath(flag: string | undefined, errors: Problem[]): string | undefined {
  const value = flag ?? RUN_DEFAULTS.accessLog;
  if (value === "off") return undefined;
  const file = resolve(value);
  if (!NGINX_PATH.test(file) || value === "" || file.endsWith("/"))
    errors.push({
      code: "invalid_flag",
      path: "--access-log",
      message: `${JSON.stringify(value)}: name a file whose path has only letters, digits and . _ / @ + - (or off)`,
    });
  return file;
}

/** A problem with how `run` was invoked (exit 2), rather than with what it was given (exit 1). */
export const USAGE = "usage";

/**
 * A secret from `--<name>-file` (one trailing newline dropped: how editors and `echo` leave it), else from its
 * environment variable: the same precedence for every secret.
 */
async function readSecret(
  file: string | undefined,
  flag: string,
  env: Readonly<Record<string, string | undefined>>,
  envName: string,
): Promise<Checked<string | undefined>> {
  if (file === undefined) return { ok: true, value: env[envName] || undefined, warnings: [] };
  try {
    const value = (await readFile(file, "utf8")).trim();
    if (value === "")
      return { ok: false, errors: [{ code: "secret", path: flag, message: `${file} is empty` }], warnings: [] };
    return { ok: true, value, warnings: [] };
  } catch (e) {
    return { ok: false, errors: [{ code: "secret", path: flag, message: (e as Error).message }], warnings: [] };
  }
}

/**
 * The files `run` reads from its first second (services.json, etcd's TLS files, the nginx binary): each missing or
 * unreadable one is a problem naming its flag. Separate from resolveRunConfig, which reads no file system but secrets.
 */
export async function startFileProblems(
  flags: RunFlags,
  env: Readonly<Record<string, string | undefined>>,
): Promise<Problem[]> {
  const errors: Problem[] = [];
  // With the routing table in etcd the services file is not read.
  if (flags.servicesEtcdPrefix === undefined)
    await readableFile(flags.services ?? RUN_DEFAULTS.services, "--services", errors);
  if (flags.etcdCacert) await readableFile(flags.etcdCacert, "--etcd-cacert", errors);
  if (flags.etcdCert) await readableFile(flags.etcdCert, "--etcd-cert", errors);
  if (flags.etcdKey) await readableFile(flags.etcdKey, "--etcd-key", errors);
  const nginxMissing = await nginxBinaryProblem(flags.nginx, env);
  if (nginxMissing) errors.push(nginxMissing);
  return errors;
}

/**
 * Resolves `run`'s flags and environment into its configuration: defaults, the environment fallbacks commander does
 * not do (secrets, HOST_IP + ETCD_PORT), and every check that can be made before anything starts.
 */
export async function resolveRunConfig(
  flags: RunFlags,
  env: Readonly<Record<string, string | undefined>>,
  accounts: AccountSource = systemAccounts(),
): Promise<Checked<RunConfig>> {
  const errors: Problem[] = [];
  if (flags.adminToken !== undefined)
    errors.push({
      code: USAGE,
      path: "--admin-token",
      message:
        `a token on the command line is visible to every local user in ps: put it in a file (mode 0600) and pass ` +
        `--admin-token-file FILE, or set ${ADMIN_TOKEN_ENV}`,
    });
  errors.push(...nginxFlagProblems(flags));
  const logLevel = flags.logLevel ?? RUN_DEFAULTS.logLevel;
  if (!LOG_LEVELS.includes(logLevel))
    errors.push({ code: "invalid_flag", path: "--log-level", message: `must be one of ${LOG_LEVELS.join(", ")}` });
  const mode = flags.endpointsMode ?? RUN_DEFAULTS.endpointsMode;
  const endpointsMode = MODES.find((m) => m === mode);
  if (endpointsMode === undefined)
    errors.push({ code: "invalid_flag", path: "--endpoints-mode", message: `must be one of ${MODES.join(", ")}` });
  // Not given: app.ts decides (chooseRoutesMode) once the endpoints mode is known, and says why when it is reload.
  const routesMode = flags.routesMode === undefined ? undefined : ROUTES_MODES.find((m) => m === flags.routesMode);
  if (flags.routesMode !== undefined && routesMode === undefined)
    errors.push({ code: "invalid_flag", path: "--routes-mode", message: `must be one of ${ROUTES_MODES.join(", ")}` });
  if (routesMode === "dynamic" && endpointsMode === "reload")
    errors.push({
      code: USAGE,
      path: "--routes-mode",
      message:
        "dynamic routes need dynamic endpoints (the Lua balancer holds the sets): drop --endpoints-mode reload or " +
        "pass --routes-mode reload",
    });
  const healthListen = flags.healthListen === "off" ? undefined : flags.healthListen;
  if (healthListen !== undefined)
    try {
      parseListen(healthListen, "--health-listen");
    } catch (e) {
      // The path names the flag already.
      const message = (e as Error).message.replace(/^--health-listen /, "");
      errors.push({ code: "invalid_flag", path: "--health-listen", message });
    }
  const token = await readSecret(flags.adminTokenFile, "--admin-token-file", env, ADMIN_TOKEN_ENV);
  if (!token.ok) errors.push(...token.errors);
  const accessLog = accessLogPath(flags.accessLog, errors);
  const etcd = await etcdConfigFromFlags(flags, env);
  if (!etcd.ok) errors.push(...etcd.errors);
  const startTimeoutText = flags.startTimeout ?? RUN_DEFAULTS.startTimeout;
  const startTimeoutMs = parseDuration(startTimeoutText);
  if (startTimeoutMs === null)
    errors.push({
      code: "invalid_flag",
      path: "--start-timeout",
      message: `${JSON.stringify(startTimeoutText)}: give a duration such as 500ms, 30s, 2m or plain seconds`,
    });

  const outlier = flags.outlierEjection === undefined ? undefined : parseOutlierFlag(flags.outlierEjection);
  if (outlier && !outlier.ok) errors.push({ code: "invalid_flag", path: "--outlier-ejection", message: outlier.why });

  const worker = await resolveWorkerUser(flags.nginxUser, accounts);
  if (!worker.ok) errors.push(...worker.errors);
  const routesPrefix = flags.servicesEtcdPrefix;
  if (routesPrefix !== undefined && etcd.ok) {
    if (!/^\/[A-Za-z0-9._/-]*[^/]$/.test(routesPrefix))
      errors.push({
        code: "invalid_flag",
        path: "--services-etcd-prefix",
        message: `${JSON.stringify(routesPrefix)}: an absolute etcd key of letters, digits and . _ / - without a trailing "/"`,
      });
    if (etcd.value.etcdUrls.length === 0)
      errors.push({
        code: USAGE,
        path: "--services-etcd-prefix",
        message: "needs --etcd-endpoints (or HOST_IP + ETCD_PORT): the routing table is read from that etcd",
      });
    if (etcd.value.api !== "v3")
      errors.push({
        code: USAGE,
        path: "--services-etcd-prefix",
        message: "needs the v3 API: the routing table is read with etcd's v3 API (drop --etcd-api v2)",
      });
  }
  if (
    errors.length > 0 ||
    !token.ok ||
    !etcd.ok ||
    !worker.ok ||
    endpointsMode === undefined ||
    (flags.routesMode !== undefined && routesMode === undefined) ||
    startTimeoutMs === null
  )
    return { ok: false, errors, warnings: worker.warnings };

  const controller: RunOptions = {
    services: flags.services ?? RUN_DEFAULTS.services,
    stateDir: flags.stateDir ?? RUN_DEFAULTS.stateDir,
    ...(flags.nginx ? { nginx: flags.nginx } : {}),
    ...(flags.backends ? { backends: flags.backends } : {}),
    ...(flags.listenHost ? { listenHost: flags.listenHost } : {}),
    watchServices: flags.watch !== false,
    endpointsMode,
    ...(routesMode !== undefined ? { routesMode } : {}),
    ...(flags.controlPort ? { controlPort: Number(flags.controlPort) } : {}),
    ...(flags.workerProcesses
      ? { workerProcesses: flags.workerProcesses === "auto" ? "auto" : Number(flags.workerProcesses) }
      : {}),
    ...(etcd.value.etcdUrls.length > 0 ? { etcd: etcd.value } : {}),
    ...(worker.value ? { nginxUser: worker.value } : {}),
    ...(accessLog !== undefined ? { accessLog } : {}),
    startTimeoutMs,
    ...(routesPrefix !== undefined ? { servicesEtcdPrefix: routesPrefix } : {}),
    ...(outlier?.ok ? { outlier: outlier.value } : {}),
  };
  const admin: AdminFlags = {
    stateDir: controller.stateDir,
    ...(flags.adminListen !== undefined ? { listen: flags.adminListen } : {}),
    ...(token.value !== undefined ? { token: token.value } : {}),
    traffic: flags.trafficLog !== false,
    ...(healthListen !== undefined ? { healthListen } : {}),
  };
  return { ok: true, value: { controller, admin, logLevel }, warnings: worker.warnings };
}
