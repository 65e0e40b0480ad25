import {
  type BackendSet,
  type Endpoint,
  DEFAULT_PREFIX,
  parseEndpointKey,
  sortEndpoints,
  type KeyReading,
} from "./backends.js";
import type { Problem } from "./problem.js";

/**
 * The registry's key/value map turned into a backend set incrementally: a put or delete re-parses one key and
 * rebuilds only its backend's record; untouched records are shared with the previous snapshot. With 10,000 keys a
 * watch event then costs microseconds instead of a full re-parse, and `changed` says whether
 * anything a consumer can see moved. `snapshot()` equals `backendSetFromKeys` over the same map (property-tested).
 */
export class BackendIndex {
  private readonly readings = new Map<string, KeyReading>();
  private readonly keysByName = new Map<string, Set<string>>();
  private readonly records = new Map<string, Readonly<Record<string, Endpoint>>>();
  private readonly dirtyNames = new Set<string>();
  private last: { set: BackendSet; warnings: Problem[] } | null = null;
  private warningsDirty = true;
  /** True when something visible changed since the last snapshot. */
  changed = true;

  constructor(private readonly prefix: string = DEFAULT_PREFIX) {}

  /** Records a put. */
  set(key: string, value: string): void {
    const before = this.readings.get(key);
    const after = parseEndpointKey(key, value, this.prefix);
    if (before !== undefined && sameReading(before, after)) return;
    this.forget(key, before);
    // Re-inserted, so the map's order is the order keys were last written (warnings come out in that order).
    this.readings.delete(key);
    this.readings.set(key, after);
    if (after.kind === "endpoint") {
      let keys = this.keysByName.get(after.name);
      if (!keys) this.keysByName.set(after.name, (keys = new Set()));
      keys.delete(key);
      keys.add(key);
      this.dirtyNames.add(after.name);
    }
    if (after.kind === "rejected" || after.warning !== undefined || before?.kind === "rejected")
      this.warningsDirty = true;
    this.changed = true;
  }

  /** Records a delete. */
  delete(key: string): void {
    const before = this.readings.get(key);
    if (before === undefined) return;
    this.forget(key, before);
    this.readings.delete(key);
    this.changed = true;
  }

  /** Every key recorded, rejected ones included, in the order they were last written. */
  keys(): IterableIterator<string> {
    return this.readings.keys();
  }

  /** How many keys are recorded. */
  get size(): number {
    return this.readings.size;
  }

  /** Forgets every key. */
  clear(): void {
    // No name is dirty after a clear, so the next snapshot must not reuse the last set: it rebuilds from nothing.
    this.last = null;
    this.readings.clear();
    this.keysByName.clear();
    this.records.clear();
    this.dirtyNames.clear();
    this.warningsDirty = true;
    this.changed = true;
  }

  private forget(key: string, before: KeyReading | undefined): void {
    if (before === undefined) return;
    if (before.kind === "rejected" || before.warning !== undefined) this.warningsDirty = true;
    if (before.kind !== "endpoint") return;
    this.keysByName.get(before.name)?.delete(key);
    this.dirtyNames.add(before.name);
  }

  /** The whole set (sorted, as backendSetFromKeys gives it) and the warnings of rejected keys and odd values. */
  snapshot(): { set: BackendSet; warnings: Problem[] } {
    if (this.last && !this.changed) return this.last;
    for (const name of this.dirtyNames) {
      const keys = this.keysByName.get(name);
      if (!keys || keys.size === 0) {
        this.keysByName.delete(name);
        this.records.delete(name);
        continue;
      }
      // Two keys naming one address (two spellings of an IPv6 address): the one written last wins.
      const eps: Record<string, Endpoint> = {};
      for (const key of keys) {
        const r = this.readings.get(key);
        if (r?.kind === "endpoint") eps[r.ip] = r.endpoint;
      }
      this.records.set(name, sortEndpoints(eps));
    }
    const rebuilt = this.dirtyNames.size > 0 || !this.last;
    this.dirtyNames.clear();
    let set = this.last?.set ?? {};
    if (rebuilt) {
      const out: Record<string, Readonly<Record<string, Endpoint>>> = {};
      for (const name of [...this.records.keys()].sort()) out[name] = this.records.get(name) ?? {};
      set = out;
    }
    let warnings = this.last?.warnings ?? [];
    if (this.warningsDirty) {
      warnings = [];
      for (const [key, r] of this.readings) {
        if (r.kind === "rejected") warnings.push({ code: "registry_key_rejected", path: key, message: r.reason });
        else if (r.warning) warnings.push({ code: "registry_value", path: key, message: r.warning });
      }
      this.warningsDirty = false;
    }
    this.last = { set, warnings };
    this.changed = false;
    return this.last;
  }
}

function sameReading(a: KeyReading, b: KeyReading): boolean {
  if (a.kind === "rejected") return b.kind === "rejected" && a.reason === b.reason;
  if (b.kind === "rejected") return false;
  return a.name === b.name && a.ip === b.ip && a.endpoint.weight === b.endpoint.weight && a.warning === b.warning;
}
