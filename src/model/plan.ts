/** One endpoint as the dynamic balancer receives it. */
export interface PushedEndpoint {
  readonly ip: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
}

/** Every route's endpoint set by upstream name; an empty list means the route answers 503. */
export type EndpointSets = Readonly<Record<string, readonly PushedEndpoint[]>>;

/** What nginx runs (or should run): the rendered config's generation and, in dynamic mode, the pushed sets. */
export interface AppliedState {
  readonly mode: "reload" | "dynamic";
  /** Generation hash of the rendered nginx.conf (in dynamic mode it holds no endpoint). */
  readonly generation: string;
  /** The endpoint sets nginx holds in its shared dict; null in reload mode (they are in the config). */
  readonly endpoints: EndpointSets | null;
}

/**
 * How to get from `running` to `desired`. `reload` also covers "nothing runs yet"; in dynamic mode a reload is
 * followed by a push, since the shared dict may hold sets of routes that changed.
 */
export type PlanAction = "none" | "dynamic" | "reload";

function sameEndpoint(a: PushedEndpoint, b: PushedEndpoint): boolean {
  return a.ip === b.ip && a.port === b.port && a.weight === b.weight && a.backup === b.backup;
}

/** True when two endpoint sets are equal. Upstream order is irrelevant; endpoints compare in order (both sides come
 * from the same sorted plan). */
export function sameEndpointSets(a: EndpointSets, b: EndpointSets): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => sameList(a[k], b[k]));
}

function sameList(x: readonly PushedEndpoint[] | undefined, y: readonly PushedEndpoint[] | undefined): boolean {
  if (x === y) return x !== undefined;
  if (x === undefined || y === undefined || x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    const ex = x[i];
    const ey = y[i];
    if (ex === undefined || ey === undefined || !sameEndpoint(ex, ey)) return false;
  }
  return true;
}

/** Decides the cheapest action that makes nginx serve `desired`: a pure function of the two states. */
export function plan(running: AppliedState | null, desired: AppliedState): PlanAction {
  if (running === null || running.mode !== desired.mode || running.generation !== desired.generation) return "reload";
  if (desired.mode === "reload") return "none";
  if (desired.endpoints === null) return "none";
  // Unknown sets (nginx restarted, or the last push failed) must be pushed again.
  if (running.endpoints === null) return "dynamic";
  return sameEndpointSets(running.endpoints, desired.endpoints) ? "none" : "dynamic";
}

/**
 * The upstreams whose sets differ between `running` and `desired`, for a partial push; null when the two do not name
 * the same upstreams (a routing change: a reload and a whole push follow).
 */
export function changedUpstreams(running: EndpointSets, desired: EndpointSets): string[] | null {
  const names = Object.keys(desired);
  if (names.length !== Object.keys(running).length) return null;
  const changed: string[] = [];
  for (const name of names) {
    const a = running[name];
    const b = desired[name];
    if (a === undefined || b === undefined) return null;
    if (!sameList(a, b)) changed.push(name);
  }
  return changed;
}
