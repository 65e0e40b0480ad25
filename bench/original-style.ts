/**
 * The original design's nginx.conf (confd 0.16 + its template), rendered for the data-plane comparison: one
 * `upstream` per backend listing `server ip:port;` (weights unused), one `server` per domain, and a location per
 * route with `proxy_pass http://<upstream>` and the usual headers. What makes it the original's is what it lacks:
 * no `keepalive` in the upstream and no `proxy_http_version 1.1`, so nginx speaks HTTP/1.0 to the backend and opens
 * a new connection for every request. Written here, not in src/, because nginx-lb must never render it.
 */
import type { BackendSet } from "../src/model/backends.js";
import type { RouteSpec } from "./lib/lb.js";
import { head, tempPaths } from "./lib/static-nginx.js";

export function renderOriginalStyle(
  routes: readonly RouteSpec[],
  backends: BackendSet,
  listen: { host: string; port: number },
  dir: string,
  workers: number,
): string {
  const out = [head(dir, workers), `http {`, `    access_log off;`, tempPaths(dir)];
  const names = [...new Set(routes.map((r) => r.name))];
  for (const name of names) {
    const port = routes.find((r) => r.name === name)?.port ?? 80;
    const ips = Object.keys(backends[name] ?? {});
    if (ips.length === 0) continue;
    out.push(`    upstream ${name} {`, ...ips.map((ip) => `        server ${ip}:${port};`), `    }`);
  }
  for (const domain of [...new Set(routes.map((r) => r.domain))]) {
    out.push(`    server {`, `        listen ${listen.host}:${listen.port};`, `        server_name ${domain};`);
    for (const r of routes.filter((x) => x.domain === domain))
      out.push(
        `        location ${r.prefix} {`,
        `            proxy_pass http://${r.name};`,
        `            proxy_set_header Host $host;`,
        `            proxy_set_header X-Real-IP $remote_addr;`,
        `            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`,
        `        }`,
      );
    out.push(`    }`);
  }
  out.push(`}`, ``);
  return out.join("\n");
}
