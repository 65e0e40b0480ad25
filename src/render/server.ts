import type { Server } from "../model/services.js";
import { isDynamic } from "./dynamic.js";
import { renderLocations } from "./location.js";
import type { RenderOptions } from "./options.js";
import type { RoutePlan } from "./plan-routes.js";
import { tlsFiles } from "./tls.js";
import { tok } from "./tokens.js";

/** One `server` block: the plain port and, with a certificate, the TLS port (HTTP/2) serving the same routes. */
export function renderServer(server: Server, plans: readonly RoutePlan[], options: RenderOptions): string {
  const lines = [`    server {`, `        listen ${tok.listen(options.listenHost, server.port)};`];
  const files = tlsFiles(server);
  if (server.tls && files) {
    lines.push(
      `        listen ${tok.listen(options.listenHost, server.tls.port)} ssl http2;`,
      `        ssl_certificate ${tok.file(`${options.dir}/${files.cert.path}`)};`,
      `        ssl_certificate_key ${tok.file(`${options.dir}/${files.key.path}`)};`,
    );
  }
  lines.push(`        server_name ${tok.domain(server.domain)};`);
  for (const plan of plans) lines.push(renderLocations(plan, isDynamic(options)));
  lines.push(`    }`);
  return lines.join("\n");
}

/** The catch-all of a port: unknown Host names get 404 (TLS: the handshake is refused), never another site. */
export function renderDefaultServer(port: number, tls: boolean, options: RenderOptions): string {
  const listen = tok.listen(options.listenHost, port);
  if (tls)
    return [
      `    server {`,
      `        listen ${listen} ssl http2 default_server;`,
      `        ssl_reject_handshake on;`,
      `    }`,
    ].join("\n");
  return [
    `    server {`,
    `        listen ${listen} default_server;`,
    `        server_name _;`,
    `        default_type text/plain;`,
    `        return 404 "no site is configured for this host name\\n";`,
    `    }`,
  ].join("\n");
}
