import type { BackendSet } from "../model/backends.js";
import { backendName, type BackendRef, type HealthCheck, type Services } from "../model/services.js";

/** The verdict on one checked endpoint, as the reconciler compiles it in and the status shows it. */
export interface EndpointHealth {
  readonly state: "up" | "down";
  /** ISO time the state began. */
  readonly since: string;
  /** The probe result that decided it, e.g. "connection refused", "status 500 (expected 200-399)". */
  readonly reason: string;
}

/** Checked endpoints' verdicts by `healthKey`; an endpoint without one is not judged yet and serves. */
export type Health = ReadonlyMap<string, EndpointHealth>;

export const NO_HEALTH: Health = new Map();

/** The identity of one probe: the check definition and the endpoint. Routes sharing both share the probe. */
export function healthKey(check: HealthCheck, ip: string, port: number): string {
  return `${check.key}|${ip}|${port}`;
}

/** One endpoint to probe with one check definition. */
export interface CheckTarget {
  readonly key: string;
  readonly check: HealthCheck;
  readonly ip: string;
  readonly port: number;
}

/**
 * Every distinct (check, ip, port) the routing model checks over an endpoint snapshot (pure): 10,000 routes over the
 * same services yield one target per endpoint and check, not per route.
 */
export function checkTargets(services: Services, backends: BackendSet): Map<string, CheckTarget> {
  const out = new Map<string, CheckTarget>();
  const add = (ref: BackendRef | undefined) => {
    const check = ref?.healthCheck;
    if (!ref || !check) return;
    for (const ip of Object.keys(backends[backendName(ref)] ?? {})) {
      const key = healthKey(check, ip, ref.port);
      if (!out.has(key)) out.set(key, { key, check, ip, port: ref.port });
    }
  };
  for (const server of services.servers)
    for (const route of server.routes) {
      add(route.primary);
      add(route.backup);
    }
  return out;
}
