import type { BackendSet } from "../model/backends.js";
import type { Services } from "../model/services.js";
import {
  dynamicControlLines,
  dynamicFiles,
  dynamicHttpLines,
  dynamicMainLines,
  isDynamic,
  renderDynamicUpstream,
  statsHttpLines,
} from "./dynamic.js";
import { fnv1a64 } from "./hash.js";
import type { RenderOptions, Rendered, RenderedFile } from "./options.js";
import { bindRoutes, type BoundRoute } from "./bind-routes.js";
import {
  isRoutesDynamic,
  isTlsRouted,
  renderPortServer,
  renderTlsRouterServer,
  renderSharedUpstream,
  routesControlLines,
  routesFiles,
  routesInit,
} from "./routes-dynamic.js";
import { renderDefaultServer, renderServer, tagsRoutes } from "./server.js";
import { tlsFiles } from "./tls.js";
import { certsFiles, pushesCerts } from "./tls-dynamic.js";
import { tok } from "./tokens.js";
import { renderUpstream } from "./upstream.js";

/** The desired state: the routing model and the endpoint snapshot. */
export interface Desired {
  readonly services: Services;
  readonly backends: BackendSet;
}

const GENERATION_MARK = "@@NGINX_LB_GENERATION@@";
export const GENERATION_PATH = "/nginx-lb/generation";

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Hash sizes that let nginx place every server name (10,000 domains and more) without a start-up error. */
function serverNamesHash(services: Services): string[] {
  const longest = Math.max(0, ...services.servers.map((s) => s.domain.length));
  const bucket = longest > 100 ? 512 : 128;
  const max = Math.max(1024, nextPow2(services.servers.length * 4));
  return [`server_names_hash_max_size ${tok.int(max)};`, `server_names_hash_bucket_size ${tok.int(bucket)};`];
}

function controlServer(port: number, extra: readonly string[]): string {
  return [
    `    server {`,
    `        # nginx-lb's internal control server: loopback only, never a frontend port.`,
    `        listen 127.0.0.1:${tok.port(port)};`,
    `        access_log off;`,
    `        location = ${GENERATION_PATH} {`,
    `            default_type text/plain;`,
    `            return 200 "${GENERATION_MARK}";`,
    `        }`,
    ...extra,
    `        location / {`,
    `            return 404;`,
    `        }`,
    `    }`,
  ].join("\n");
}

/**
 * The operator's access log (`--access-log`): one JSON object per line, every value escaped by nginx. Numbers only
 * where nginx always writes a valid JSON number; the status stays a string (nginx logs an HTTP/0.9 request as "009").
 * Upstream fields hold nginx's lists ("a, b") when a request tried more than one endpoint. `route` is the upstream
 * name of the route (as in /metrics and /api/status), empty when no route matched.
 */
const ACCESS_FORMAT =
  `'{"time":"$time_iso8601","remote_addr":"$remote_addr","host":"$host","method":"$request_method",` +
  `"uri":"$request_uri","status":"$status","bytes":$bytes_sent,"request_time":$request_time,` +
  `"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",` +
  `"upstream_response_time":"$upstream_response_time","route":"$nlb_route"}'`;

/**
 * What nginx logs per request: nothing by default; the traffic counters (dynamic mode: our Lua adds to counters in a
 * shared dict that the controller drains through the control server); else the traffic records (one tab-separated
 * record per request appended to a file in the state dir that the controller reads; the nginx master opens it before
 * its workers drop privileges, so the records can come from nginx only); the operator's access log. All name the route by
 * $nlb_route, which every route location sets; requests outside any route (unknown host) log an empty route.
 */
function logLines(options: RenderOptions): string[] {
  const { trafficLogFile: traffic, accessLog } = options;
  if (!tagsRoutes(options)) return [`    access_log off;`];
  return [
    `    map $host $nlb_route {`,
    `        default "";`,
    `    }`,
    ...statsHttpLines(options),
    ...(traffic !== undefined
      ? [
          // Tab-separated and unescaped: no field can hold a tab or a line end (the route is one of our upstream
          // names, the rest are nginx's numbers and the peers' addresses), so nginx writes each value as it is
          // instead of escaping it, and the controller splits the line rather than parsing JSON (parseRecord checks
          // every field).
          `    log_format nlb escape=none '$nlb_route\t$status\t$request_time\t$upstream_response_time\t$bytes_sent\t$upstream_addr';`,
        ]
      : []),
    ...(accessLog
      ? [`    log_format nlb_access escape=json ${ACCESS_FORMAT};`, `    access_log ${tok.file(accessLog)} nlb_access;`]
      : []),
    // Buffered: one write per 64 KiB of records or per second rather than a write() per request. The controller
    // reads the file every 250 ms, so a record is late by a second at most; nginx writes out the buffer when a
    // worker exits (reload, stop), so only a worker that crashes loses its last second of records.
    ...(traffic !== undefined ? [`    access_log ${tok.file(traffic)} nlb buffer=64k flush=1s;`] : []),
    // With neither file nginx would fall back to its built-in access log (its compiled-in path, the combined format):
    // a write per request to a file nobody reads, which grows without end.
    ...(traffic === undefined && !accessLog ? [`    access_log off;`] : []),
  ];
}

/**
 * Idle upstream connections each worker keeps per route. A few dozen is below what one busy route needs (50 client
 * connections on one worker then opened ~200 backend connections per 1,000 requests); ingress-nginx keeps 320. But
 * nginx allocates the whole cache per upstream per worker at start (~64 bytes a slot), so the budget is spread over
 * the routes: 320 for up to 625 routes, down to 16 at 12,500 and beyond (about 13 MB per worker at most).
 */
function defaultKeepalive(routes: number): number {
  return Math.max(16, Math.min(320, Math.floor(200_000 / Math.max(1, routes))));
}

/** Renders the whole nginx.conf and its TLS files. Pure: the same input gives byte-identical output. */
export function renderNginxConf(desired: Desired, options: RenderOptions): Rendered {
  return renderConf(desired.services, bindRoutes(desired.services, desired.backends), options);
}

/**
 * All that nginx.conf takes from the model when that is less than the whole model, or null when it is not: with routes
 * and certificates pushed (isTlsRouted) only the listening ports and each port's kind shape it. Two models of the same
 * shape render the same bytes under the same options, whatever their sites, routes and endpoints.
 */
export function confShape(services: Services, options: RenderOptions): string | null {
  if (!isTlsRouted(options)) return null;
  const ports = new Map<number, boolean>();
  for (const s of services.servers) {
    ports.set(s.port, false);
    if (s.tls) ports.set(s.tls.port, true);
  }
  return [...ports]
    .sort((a, b) => a[0] - b[0])
    .map(([port, tls]) => `${port}${tls ? " tls" : ""}`)
    .join(",");
}

/** Renders nginx.conf from routes already bound to their endpoints (`bindRoutes` of the same `services`). */
export function renderConf(services: Services, routes: readonly BoundRoute[], options: RenderOptions): Rendered {
  const dir = tok.file(options.dir.replace(/\/+$/, ""));
  const opts = { ...options, dir };
  const pushed = isRoutesDynamic(options);
  const tlsRouted = isTlsRouted(options);
  // Dynamic routes: plain-port sites are pushed, not rendered, and with pushed certificates TLS sites too; then only
  // the set of ports shapes nginx.conf, so a site added or changed leaves the generation alone. With certificate
  // files, TLS sites are still rendered per site.
  const rendered = tlsRouted ? [] : pushed ? services.servers.filter((s) => s.tls) : services.servers;
  const renderedRoutes = tlsRouted ? [] : pushed ? routes.filter((r) => r.server.tls) : routes;
  const byServer = new Map<object, BoundRoute[]>();
  for (const p of routes) {
    const list = byServer.get(p.server);
    if (list) list.push(p);
    else byServer.set(p.server, [p]);
  }

  const ports = new Map<number, boolean>();
  for (const s of services.servers) {
    ports.set(s.port, false);
    if (s.tls) ports.set(s.tls.port, true);
  }
  const files: RenderedFile[] = [];
  if (!pushesCerts(options))
    for (const s of services.servers) {
      const f = tlsFiles(s);
      if (f) files.push(f.cert, f.key);
    }
  files.push(...dynamicFiles(options), ...certsFiles(options), ...routesFiles(options));

  const out: string[] = [
    `# Rendered by nginx-lb from services.json and the backend registry. Do not edit: it is rewritten on every change.`,
    `worker_processes ${options.workerProcesses === undefined || options.workerProcesses === "auto" ? "auto" : tok.int(options.workerProcesses)};`,
    ...(options.user ? [`user ${tok.user(options.user.name)} ${tok.user(options.user.group)};`] : []),
    `pid ${tok.file(options.pidFile ?? `${dir}/nginx.pid`)};`,
    `error_log ${tok.file(`${dir}/logs/error.log`)} warn;`,
    `worker_rlimit_nofile 65536;`,
    ...dynamicMainLines(options),
    ``,
    `events {`,
    `    worker_connections 8192;`,
    `}`,
    ``,
    `http {`,
    `    default_type application/octet-stream;`,
    `    server_tokens off;`,
    `    sendfile on;`,
    `    tcp_nodelay on;`,
    `    keepalive_timeout 65s;`,
    ...logLines(options),
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(
      (t) => `    ${t}_temp_path ${tok.file(`${dir}/tmp/${t}`)};`,
    ),
    ...serverNamesHash({ servers: rendered }).map((l) => `    ${l}`),
    ``,
    `    # Only websocket upgrades pass (an h2c upgrade could tunnel past the route's path prefix); without one an empty`,
    `    # Connection keeps upstream keepalive working.`,
    `    map $http_upgrade $nlb_upgrade {`,
    `        default "";`,
    `        ~*^websocket$ $http_upgrade;`,
    `    }`,
    `    map $nlb_upgrade $nlb_connection {`,
    `        default upgrade;`,
    `        "" "";`,
    `    }`,
    `    # The Host header as the client sent it (port included); $host only when the client sent none.`,
    `    map $http_host $nlb_host {`,
    `        "" $host;`,
    `        default $http_host;`,
    `    }`,
    `    proxy_http_version 1.1;`,
    `    proxy_set_header Host $nlb_host;`,
    `    proxy_set_header X-Real-IP $remote_addr;`,
    `    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`,
    `    proxy_set_header X-Forwarded-Proto $scheme;`,
    `    proxy_set_header X-Forwarded-Host $nlb_host;`,
    `    proxy_set_header Upgrade $nlb_upgrade;`,
    `    proxy_set_header Connection $nlb_connection;`,
    `    proxy_connect_timeout 5s;`,
    `    proxy_next_upstream error timeout;`,
    // Each endpoint of an upstream at most once (0 = as many tries as it has servers), so the backups are reached
    // however many primaries are down; endpoints that time out rather than refuse are bounded by the timeout.
    `    proxy_next_upstream_tries 0;`,
    `    proxy_next_upstream_timeout 15s;`,
    ``,
    ...dynamicHttpLines(options, dir, routesInit(options, dir)),
  ];
  const keepalive = options.upstreamKeepalive ?? defaultKeepalive(renderedRoutes.length);
  if (pushed) out.push(renderSharedUpstream(options));
  for (const p of renderedRoutes)
    if (isDynamic(options)) out.push(renderDynamicUpstream(p, keepalive));
    else if (p.members.length > 0) out.push(renderUpstream(p, keepalive));
  for (const [port, tls] of [...ports].sort((a, b) => a[0] - b[0]))
    out.push(
      pushed && !tls
        ? renderPortServer(port, opts)
        : tlsRouted
          ? renderTlsRouterServer(port, opts)
          : renderDefaultServer(port, tls, opts),
    );
  for (const s of rendered) out.push(renderServer(s, byServer.get(s) ?? [], opts, !pushed));
  const control = out.length;
  if (options.controlPort !== undefined)
    out.push(controlServer(options.controlPort, [...dynamicControlLines(options), ...routesControlLines(options)]));
  out.push(`}`, ``);

  // The generation hashes the text with the mark in place, then the files: hashed in the pieces it is built from and
  // joined once with the mark already replaced, since at 10,000 routes each whole copy of the text is megabytes.
  const pieces: string[] = [];
  for (const block of out) {
    if (pieces.length > 0) pieces.push("\n");
    pieces.push(block);
  }
  files.forEach((f, i) => {
    if (i > 0) pieces.push("\n");
    pieces.push(f.path, "\n", f.content);
  });
  const generation = fnv1a64(pieces);
  const marked = out[control];
  if (options.controlPort !== undefined && marked !== undefined)
    out[control] = marked.replace(GENERATION_MARK, generation);
  return { conf: out.join("\n"), files, generation };
}
