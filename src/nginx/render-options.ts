import { join } from "node:path";
import type { RenderOptions } from "../render/index.js";
import { balancerLuaSource } from "./lua-source.js";
import type { NginxPaths } from "./process.js";

/** What `nginx-lb run` settled on that shapes nginx.conf, besides the paths of its state dir. */
export interface NginxSettings {
  readonly controlPort: number;
  /** The secret every request to the push endpoint carries; nginx refuses any request without it. */
  readonly pushToken: string;
  readonly endpointsMode: "reload" | "dynamic";
  /** `dynamic`: routes pushed to the Lua router (needs dynamic endpoints); default reload (rendered per site). */
  readonly routesMode?: "reload" | "dynamic";
  readonly listenHost?: string;
  readonly workerProcesses?: number | "auto";
  /** The file in the state dir nginx appends per-request traffic records to; none when absent. */
  readonly trafficLogFile?: string;
  /** Dynamic mode: nginx counts traffic in a shared dict the controller reads (nginx_lb_stats). */
  readonly trafficCounters?: boolean;
  /** The user and group nginx's workers switch to (only when the controller runs as root). */
  readonly user?: RenderOptions["user"];
  /** nginx's JSON access log (`--access-log`); none when absent. */
  readonly accessLog?: string;
  /** Where TLS certificates come from (RenderOptions.certsMode); "pushed" needs dynamic endpoints and a placeholder. */
  readonly certsMode?: RenderOptions["certsMode"];
  /** The state dir's placeholder certificate (src/nginx/tls-placeholder.ts), for pushed certificates. */
  readonly tlsPlaceholder?: RenderOptions["tlsPlaceholder"];
  /** Dynamic mode: passive outlier ejection settings; the defaults when absent. */
  readonly outlier?: RenderOptions["outlier"];
}

/** Where a managed nginx keeps its files inside a state dir. */
export function nginxPaths(dir: string, nginx: string): NginxPaths {
  return { nginx, dir, conf: join(dir, "nginx.conf"), pidFile: join(dir, "nginx.pid") };
}

/**
 * The render options of a running controller. The daemon and the test harness both take them from here, so a test
 * renders exactly what `nginx-lb run` renders (control port, push token, pid file, Lua modules, traffic file or counters).
 */
export function runRenderOptions(paths: NginxPaths, settings: NginxSettings): RenderOptions {
  return {
    dir: paths.dir,
    pidFile: paths.pidFile,
    controlPort: settings.controlPort,
    endpointsMode: settings.endpointsMode,
    ...(settings.routesMode === "dynamic" ? { routesMode: settings.routesMode } : {}),
    pushToken: settings.pushToken,
    ...(settings.endpointsMode === "dynamic" ? { luaSource: balancerLuaSource() } : {}),
    ...(settings.listenHost ? { listenHost: settings.listenHost } : {}),
    ...(settings.workerProcesses !== undefined ? { workerProcesses: settings.workerProcesses } : {}),
    ...(settings.trafficLogFile !== undefined ? { trafficLogFile: settings.trafficLogFile } : {}),
    ...(settings.trafficCounters ? { trafficCounters: true } : {}),
    ...(settings.user ? { user: settings.user } : {}),
    ...(settings.accessLog !== undefined ? { accessLog: settings.accessLog } : {}),
    ...(settings.certsMode !== undefined ? { certsMode: settings.certsMode } : {}),
    ...(settings.tlsPlaceholder ? { tlsPlaceholder: settings.tlsPlaceholder } : {}),
    ...(settings.outlier !== undefined ? { outlier: settings.outlier } : {}),
  };
}
