/**
 * Builds a validated `Desired` from plain JSON the way the CLI does (parseServices with the real TLS inspector, then
 * parseBackendsFile), throwing with every error when the input is invalid: tests state inputs as users write them.
 *
 *   const desired = mustDesired({ servers: [...] }, { "app-svc": { "127.0.0.2": { weight: 1 } } });
 *   const routes = services("demo.test", port, [{ prefix: "/", app: "app", service: "web", port: 8080 }]);
 */
import { parseBackendsFile } from "../../src/model/backends.js";
import { formatProblem } from "../../src/model/problem.js";
import { parseServices, type Services } from "../../src/model/services.js";
import type { Desired } from "../../src/render/index.js";
import { nodeTlsInspector } from "../../src/tls/inspect.js";

export function mustDesired(services: unknown, backends: unknown = {}): Desired {
  const s = parseServices(services, { inspectTls: nodeTlsInspector });
  const b = parseBackendsFile(backends);
  const errors = [...(s.ok ? [] : s.errors), ...(b.ok ? [] : b.errors)];
  if (!s.ok || !b.ok) throw new Error(`invalid test input:\n${errors.map(formatProblem).join("\n")}`);
  return { services: s.value, backends: b.value };
}

/** One route of `services`: the services.json route under `prefix`, with an optional backup. */
export interface SimpleRoute {
  readonly prefix: string;
  readonly app: string;
  readonly service: string;
  readonly port: number;
  readonly backup?: { readonly app: string; readonly service: string; readonly port: number };
}

/** A validated services model of one domain on `frontendPort` with the given routes. */
export function services(domain: string, frontendPort: number, routes: readonly SimpleRoute[]): Services {
  const raw = {
    servers: [
      {
        domain_name: domain,
        frontend_port: frontendPort,
        routes: Object.fromEntries(
          routes.map((r) => [
            r.prefix,
            { app: r.app, service: r.service, port: r.port, ...(r.backup ? { backup: r.backup } : {}) },
          ]),
        ),
      },
    ],
  };
  return mustDesired(raw).services;
}
