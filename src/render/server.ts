import type { Server } from "../model/services.js";
import { isDynamic } from "./dynamic.js";
import { renderLocations } from "./location.js";
import type { RenderOptions } from "./options.js";
import type { BoundRoute } from "./bind-routes.js";
import { tlsFiles } from "./tls.js";
import { certLines, pushesCerts } from "./tls-dynamic.js";
import { tok } from "./tokens.js";

/** True when something per request names the route ($nlb_route): the traffic records or counters, the access log. */
export function tagsRoutes(options: RenderOptions): boolean {
  return options.trafficLogFile !== undefined || options.trafficCounters === true || Boolean(options.accessLog);
}

/**
 * One `server` block: the plain port and, with a certificate, the TLS port (HTTP/2) serving the same routes. Without
 * `plain` only the TLS port (dynamic routes mode serves plain ports from one server per port).
 */
export function renderServer(
  server: Server,
  routes: readonly BoundRoute[],
  options: RenderOptions,
  plain = true,
): string {
  const lines = [`    server {`, ...(plain ? [`        listen ${tok.listen(options.listenHost, server.port)};`] : [])];
  const files = tlsFiles(server);
  if (server.tls && pushesCerts(options)) {
    // The certificate comes from the pushed ones by SNI; nginx still picks this server by SNI, as with files.
    lines.push(
      `        listen ${tok.listen(options.listenHost, server.tls.port)} ssl http2;`,
      ...certLines(server.tls.port, options),
    );
  } else if (server.tls && files) {
    lines.push(
      `        listen ${tok.listen(options.listenHost, server.tls.port)} ssl http2;`,
      `        ssl_certificate ${tok.file(`${options.dir}/${files.cert.path}`)};`,
      `        ssl_certificate_key ${tok.file(`${options.dir}/${files.key.path}`)};`,
    );
  }
  lines.push(`        server_name ${tok.domain(server.domain)};`);
  for (const bound of routes) lines.push(renderLocations(bound, isDynamic(options), tagsRoutes(options)));
  // Without a `/` route nginx would answer unmatched paths from files under its prefix (403/404 pages, or real files).
  if (!routes.some((p) => p.route.prefix === "/"))
    lines.push(
      `        location / {`,
      `            default_type text/plain;`,
      `            return 404 "no route for this path\\n";`,
      `        }`,
    );
  lines.push(`    }`);
  return lines.join("\n");
}

/** The catch-all of a port: unknown Host names get 404 (TLS: the handshake is refused), never another site. */
export function renderDefaultServer(port: number, tls: boolean, options: RenderOptions): string {
  const listen = tok.listen(options.listenHost, port);
  // On a TLS port a client can name a known site in SNI and another in Host; nginx then picks this server by Host,
  // so it needs the same 404 as the plain one (without it nginx serves files from <prefix>/html).
  return [
    `    server {`,
    tls ? `        listen ${listen} ssl http2 default_server;` : `        listen ${listen} default_server;`,
    ...(tls ? [`        ssl_reject_handshake on;`] : []),
    `        server_name _;`,
    `        default_type text/plain;`,
    `        return 404 "no site is configured for this host name\\n";`,
    `    }`,
  ].join("\n");
}
