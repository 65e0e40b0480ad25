import { sortStrings } from "../shared/sort.js";
import {
  type BackendSet,
  type Endpoint,
  DEFAULT_PREFIX,
  keyPrefix,
  parseEndpointKey,
  type KeyReading,
} from "./backends.js";
import type { Problem } from "./problem.js";

/**
 * An endpoint key's reading as the index keeps it: the shared record of its weight when the key's address is already
 * canonical and its value raised no warning (nearly always), else that record with the canonical address and the
 * warning.
 */
type Entry = Endpoint | Noted;
interface Noted {
  readonly endpoint: Endpoint;
  readonly ip: string;
  readonly warning?: string;
}
const isNoted = (e: Entry): e is Noted => "endpoint" in e;

/** What a key says that a snapshot's warnings report: why it was rejected, or what is odd about its value. */
type Note =
  { readonly rejected: true; readonly message: string } | { readonly rejected: false; readonly message: string };

/**
 * The registry's key/value map turned into a backend set incrementally: a put or delete re-parses one key and
 * rebuilds only its backend's record; untouched records are shared with the previous snapshot. With 10,000 keys a
 * watch event then costs microseconds instead of a full re-parse, and `changed` says whether
 * anything a consumer can see moved. `snapshot()` equals `backendSetFromKeys` over the same map (property-tested).
 *
 * Compact, because at 100,000 keys it is the controller's largest structure: an endpoint key is kept as its address
 * under its backend's name (the key is `<prefix>/<name>/ips/<address>`, rebuilt when asked for), its value as one
 * record per weight shared by every endpoint of that weight (records are never mutated), and the snapshot's records
 * hold those same strings and records. Only keys with something to report keep their whole key, in `notes`.
 */
export class BackendIndex {
  /** name -> raw address (the key's last segment) -> reading, each in the order its keys were last written. */
  private readonly byName = new Map<string, Map<string, Entry>>();
  /** Rejected keys and keys whose value raised a warning, in the order they were last written. */
  private readonly notes = new Map<string, Note>();
  private readonly weights = new Map<number, Endpoint>();
  private readonly records = new Map<string, Readonly<Record<string, Endpoint>>>();
  private readonly dirtyNames = new Set<string>();
  private readonly base: string;
  private count = 0;
  private last: { set: BackendSet; warnings: Problem[] } | null = null;
  private warningsDirty = true;
  /** True when something visible changed since the last snapshot. */
  changed = true;

  constructor(private readonly prefix: string = DEFAULT_PREFIX) {
    this.base = keyPrefix(prefix);
  }

  /** Records a put. */
  set(key: string, value: string): void {
    const after = parseEndpointKey(key, value, this.prefix);
    // A key that reads as an endpoint was split by the parse already: its reading before is one lookup (a list of
    // 100,000 keys would otherwise split each key twice).
    const before = after.kind === "endpoint" ? this.readingOf(key, after.name) : this.reading(key);
    if (before !== undefined && sameReading(before, after)) return;
    this.forget(key, before);
    if (before === undefined) this.count++;
    if (after.kind === "rejected") {
      this.notes.set(key, { rejected: true, message: after.reason });
      this.warningsDirty = true;
    } else {
      const raw = this.address(key);
      const endpoint = this.shared(after.endpoint.weight);
      const entry: Entry =
        after.ip === raw && after.warning === undefined
          ? endpoint
          : { endpoint, ip: after.ip, ...(after.warning !== undefined ? { warning: after.warning } : {}) };
      let eps = this.byName.get(after.name);
      if (!eps) this.byName.set(after.name, (eps = new Map()));
      eps.set(raw, entry);
      this.dirtyNames.add(after.name);
      if (after.warning !== undefined) {
        this.notes.set(key, { rejected: false, message: after.warning });
        this.warningsDirty = true;
      }
    }
    this.changed = true;
  }

  /** Records a delete. */
  delete(key: string): void {
    const before = this.reading(key);
    if (before === undefined) return;
    this.forget(key, before);
    this.count--;
    this.changed = true;
  }

  /** Every key recorded, rejected ones included. */
  *keys(): IterableIterator<string> {
    for (const [name, eps] of this.byName) for (const raw of eps.keys()) yield `${this.base}${name}/ips/${raw}`;
    for (const [key, note] of this.notes) if (note.rejected) yield key;
  }

  /** How many keys are recorded. */
  get size(): number {
    return this.count;
  }

  /** Forgets every key. */
  clear(): void {
    // No name is dirty after a clear, so the next snapshot must not reuse the last set: it rebuilds from nothing.
    this.last = null;
    this.byName.clear();
    this.notes.clear();
    this.records.clear();
    this.dirtyNames.clear();
    this.count = 0;
    this.warningsDirty = true;
    this.changed = true;
  }

  /** The last segment of a key that read as an endpoint (`<prefix>/<name>/ips/<address>`). */
  private address(key: string): string {
    return key.slice(key.lastIndexOf("/") + 1);
  }

  /** The one record of a weight this index hands out (endpoints are plain readonly data, never mutated). */
  private shared(weight: number): Endpoint {
    let e = this.weights.get(weight);
    if (e === undefined) this.weights.set(weight, (e = Object.freeze({ weight })));
    return e;
  }

  /** What the index holds for `key`, as parseEndpointKey read it; undefined when the key is not recorded. */
  private reading(key: string): KeyReading | undefined {
    const note = this.notes.get(key);
    if (note?.rejected) return { kind: "rejected", reason: note.message };
    if (!key.startsWith(this.base)) return undefined;
    const parts = key.slice(this.base.length).split("/");
    if (parts.length !== 3 || parts[1] !== "ips") return undefined;
    const [name = "", , raw = ""] = parts;
    const e = this.byName.get(name)?.get(raw);
    if (e === undefined) return undefined;
    if (!isNoted(e)) return { kind: "endpoint", name, ip: raw, endpoint: e };
    return { kind: "endpoint", name, ip: e.ip, endpoint: e.endpoint, ...(e.warning ? { warning: e.warning } : {}) };
  }

  /** `reading(key)` for a key known to be `<prefix>/<name>/ips/<address>`. */
  private readingOf(key: string, name: string): KeyReading | undefined {
    const note = this.notes.get(key);
    if (note?.rejected) return { kind: "rejected", reason: note.message };
    const raw = this.address(key);
    const e = this.byName.get(name)?.get(raw);
    if (e === undefined) return undefined;
    if (!isNoted(e)) return { kind: "endpoint", name, ip: raw, endpoint: e };
    return { kind: "endpoint", name, ip: e.ip, endpoint: e.endpoint, ...(e.warning ? { warning: e.warning } : {}) };
  }

  private forget(key: string, before: KeyReading | undefined): void {
    if (before === undefined) return;
    if (this.notes.delete(key)) this.warningsDirty = true;
    if (before.kind !== "endpoint") return;
    this.byName.get(before.name)?.delete(this.address(key));
    this.dirtyNames.add(before.name);
  }

  /** The whole set (sorted, as backendSetFromKeys gives it) and the warnings of rejected keys and odd values. */
  snapshot(): { set: BackendSet; warnings: Problem[] } {
    if (this.last && !this.changed) return this.last;
    for (const name of this.dirtyNames) {
      const eps = this.byName.get(name);
      if (!eps || eps.size === 0) {
        this.byName.delete(name);
        this.records.delete(name);
        continue;
      }
      // Without a prototype: V8 keeps such an object as a hash table from the start, where a literal `{}` would get a
      // hidden class per distinct set of addresses (at 10,000 backends, megabytes of them, and slower to build).
      const record = Object.create(null) as Record<string, Endpoint>;
      let noted = false;
      for (const e of eps.values()) if ((noted = isNoted(e))) break;
      if (!noted) {
        // Every key's address is canonical (nearly always): the addresses are the record's keys as they are.
        for (const ip of sortStrings([...eps.keys()])) record[ip] = eps.get(ip) as Endpoint;
        this.records.set(name, record);
        continue;
      }
      // Two keys naming one address (two spellings of an IPv6 address): the one written last wins.
      const byIp = new Map<string, Endpoint>();
      for (const [raw, e] of eps) {
        const ip = isNoted(e) ? e.ip : raw;
        byIp.delete(ip);
        byIp.set(ip, isNoted(e) ? e.endpoint : e);
      }
      for (const ip of [...byIp.keys()].sort()) record[ip] = byIp.get(ip) ?? this.shared(1);
      this.records.set(name, record);
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
      for (const [key, n] of this.notes)
        warnings.push({ code: n.rejected ? "registry_key_rejected" : "registry_value", path: key, message: n.message });
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
