/**
 * Passive outlier ejection in the balancer (dynamic mode): `errors` failed requests in a row (a 5xx the endpoint
 * answered, a timeout, a connection error) eject an endpoint for `baseMs`, doubled for each further ejection that
 * follows within `maxMs` of the previous one's end, up to `maxMs`; at most `maxPercent` % of a set is ejected at once.
 */
export interface OutlierSettings {
  /** 0 turns ejection off. */
  readonly errors: number;
  readonly baseMs: number;
  readonly maxMs: number;
  readonly maxPercent: number;
}

/** How the rendered nginx.conf is placed on this machine. Operator-chosen, so checked like any other token. */
export interface RenderOptions {
  /** Absolute directory holding nginx.conf, TLS files, temp dirs and logs (the state dir). */
  readonly dir: string;
  /** nginx pid file. Default `<dir>/nginx.pid`. */
  readonly pidFile?: string;
  /** `worker_processes`. Default "auto". */
  readonly workerProcesses?: number | "auto";
  /** Address frontend ports listen on (an IP literal, or undefined for all addresses). */
  readonly listenHost?: string;
  /** Loopback port of the internal control server (generation check, later endpoint pushes). None when absent. */
  readonly controlPort?: number;
  /** Idle keepalive connections per upstream per worker. Default 320, less with thousands of routes. */
  readonly upstreamKeepalive?: number;
  /** The operator's access log (JSON lines, one per request; the nginx master opens it), or null for none. Default none. */
  readonly accessLog?: string | null;
  /**
   * The user and group nginx's workers run as (`user` directive). Only when nginx starts as root, where nginx's own
   * default (nobody) would share a uid with every other unprivileged process. None: no directive.
   */
  readonly user?: { readonly name: string; readonly group: string };
  /** How endpoint changes reach nginx: in nginx.conf (reload, the default) or pushed to our Lua balancer (dynamic). */
  readonly endpointsMode?: "reload" | "dynamic";
  /**
   * How routing changes reach nginx: rendered per site (reload, the default) or pushed to our Lua router (dynamic:
   * needs dynamic endpoints; nginx.conf then holds one server per port).
   */
  readonly routesMode?: "reload" | "dynamic";
  /** Dynamic mode (required there): the secret every request to the push endpoint must carry (X-Nginx-Lb-Token); hex. */
  readonly pushToken?: string;
  /** Dynamic mode: the Lua modules by name, written beside nginx.conf (so a new balancer is a new generation). */
  readonly luaSource?: Readonly<Record<string, string>>;
  /** Dynamic mode: where nginx's dynamic modules (ndk, lua) live. Default /usr/lib/nginx/modules (Debian). */
  readonly nginxModulesDir?: string;
  /**
   * Where TLS certificates come from: files rendered beside nginx.conf ("files", the default; a change reloads) or
   * pushed to the control server and served by SNI from shared memory ("pushed", dynamic endpoints mode only; a
   * change is a push). See src/render/tls-dynamic.ts.
   */
  readonly certsMode?: "files" | "pushed";
  /**
   * Pushed certificates (required there): the self-signed certificate nginx loads at start for each TLS server, which
   * it requires even though ssl_certificate_by_lua replaces it in every handshake. Made once per state dir
   * (src/nginx/tls-placeholder.ts), so the rendered bytes stay the same.
   */
  readonly tlsPlaceholder?: { readonly cert: string; readonly key: string };
  /** Dynamic mode: passive outlier ejection in the balancer. Default DEFAULT_OUTLIER (render/dynamic.ts). */
  readonly outlier?: OutlierSettings;
  /** File in the state dir nginx appends one JSON access record per request to (per-route traffic). None: no records. */
  readonly trafficLogFile?: string;
  /**
   * Dynamic mode: per-route and per-endpoint traffic counted by our Lua in nginx's log phase (nginx_lb_stats), read
   * by the controller from the control server with the push token. The cheap alternative to `trafficLogFile`.
   */
  readonly trafficCounters?: boolean;
}

/** The file a rendered config needs beside nginx.conf: a path relative to `dir`, its bytes and mode. */
export interface RenderedFile {
  readonly path: string;
  readonly content: string;
  readonly mode: number;
}

/** The whole output of a render: nginx.conf text, the files it references, and its generation hash. */
export interface Rendered {
  readonly conf: string;
  readonly files: readonly RenderedFile[];
  readonly generation: string;
}
