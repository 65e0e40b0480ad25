/** What every figure is given: the run's size, the modes and registry to use, and the shared static backends. */
import type { Mode } from "./lb.js";
import type { RegistryKind } from "./registry.js";
import type { StaticBackends } from "./static-nginx.js";

export interface Context {
  readonly quick: boolean;
  readonly modes: readonly Mode[];
  readonly registry: RegistryKind;
  /** nginx worker_processes for nginx-lb's nginx (the machine's cores, as `auto` would give). */
  readonly workers: number;
  readonly backends: StaticBackends;
  log(msg: string): void;
}

export const round1 = (x: number): number => Math.round(x * 10) / 10;

/** Filler backend names and endpoints that nothing serves: they make the registry and the config big. */
export function fillerEndpoints(route: number, count: number): Record<string, { weight: number }> {
  const out: Record<string, { weight: number }> = {};
  for (let j = 0; j < count; j++) out[`10.${(route >> 8) & 255}.${route & 255}.${j + 1}`] = { weight: 1 };
  return out;
}
