import { backendName } from "../model/services.js";
import type { BoundRoute } from "./bind-routes.js";
import { tok } from "./tokens.js";

/** Passive health: one connection failure takes a primary out for this long, then nginx tries it again. */
const FAIL_TIMEOUT = "10s";

/** The `upstream` block of a route with endpoints (weights, drains as `down`, backups, keepalive). */
export function renderUpstream(bound: BoundRoute, keepalive: number): string {
  const { route, server } = bound;
  const backup = route.backup
    ? `, backup ${tok.backend(backendName(route.backup))}:${tok.port(route.backup.port)}`
    : "";
  const lines = [
    `    upstream ${tok.upstream(bound.upstream)} {`,
    `        # ${tok.domain(server.domain)}:${tok.port(server.port)} ${tok.path(route.prefix)} -> ` +
      `${tok.backend(backendName(route.primary))}:${tok.port(route.primary.port)}${backup}`,
  ];
  for (const m of bound.members) {
    const addr = tok.hostPort(m.ip, m.port);
    const params = m.weight === 0 ? "down" : `weight=${tok.int(m.weight)} max_fails=1 fail_timeout=${FAIL_TIMEOUT}`;
    lines.push(`        server ${addr} ${params}${m.backup ? " backup" : ""};`);
  }
  lines.push(`        keepalive ${tok.int(keepalive)};`, `    }`);
  return lines.join("\n");
}
