/** Marks a key an overlay removes from its base. */
const REMOVED: unique symbol = Symbol("removed");

/**
 * An immutable table of string keys, whose `with` shares the unchanged entries with the table it was made from: the
 * endpoint sets and the routing table are rebuilt per change with one or two keys different at 10,000 keys, and a
 * fresh 10,000-key object per change is both the change's main cost and large-object garbage that only a full
 * collection frees. A table is a base map plus a small overlay of the keys changed since; `with` copies the overlay,
 * and folds it into a new base once it grows past a fraction of the base, so a change costs about what it changes
 * (amortised) and a lookup at most two map lookups. Neither map is ever written after the table is made.
 *
 * Iteration yields the base's keys in its order (an overlaid value in its key's place, a removed key skipped), then
 * the keys the overlay added. Order carries no meaning for these tables (a push or a start-up file is a set of lines);
 * it is only stable. `table.test.ts` holds every sequence of changes equal to a plain Map's.
 */
export class Table<V> implements Iterable<[string, V]> {
  private constructor(
    private readonly base: ReadonlyMap<string, V>,
    /** Never holds `undefined` (`with` takes it for a removal), so a miss is `get(key) === undefined`. */
    private readonly overlay: ReadonlyMap<string, V | typeof REMOVED>,
    /** How many keys the table holds. */
    readonly size: number,
  ) {}

  /** A table of `entries` (a key given twice keeps its last value, as a record or a Map would). */
  static from<V>(entries: Iterable<readonly [string, V]>): Table<V> {
    const base = new Map<string, V>();
    for (const [k, v] of entries) base.set(k, v);
    return new Table(base, EMPTY, base.size);
  }

  /** A table of a record's own keys, in their order (tests and small literal tables). */
  static of<V>(record: Readonly<Record<string, V>>): Table<V> {
    return Table.from(Object.entries(record));
  }

  static empty<V>(): Table<V> {
    return new Table<V>(new Map(), EMPTY, 0);
  }

  get(key: string): V | undefined {
    const o = this.overlay.get(key);
    return o === REMOVED ? undefined : o !== undefined ? o : this.base.get(key);
  }

  has(key: string): boolean {
    const o = this.overlay.get(key);
    return o === REMOVED ? false : o !== undefined || this.base.has(key);
  }

  /**
   * This table with `changes` applied in order: a value sets its key, `undefined` removes it. Costs the changes plus
   * a copy of the overlay, and a copy of the whole table when the overlay has grown past a sixteenth of the base.
   */
  with(changes: Iterable<readonly [string, V | undefined]>): Table<V> {
    const overlay = new Map(this.overlay);
    let size = this.size;
    for (const [key, value] of changes) {
      const o = overlay.get(key);
      const had = o !== undefined ? o !== REMOVED : this.base.has(key);
      if (value === undefined) {
        if (!had) continue;
        // A key the base lacks needs no mark: dropping it from the overlay removes it.
        if (this.base.has(key)) overlay.set(key, REMOVED);
        else overlay.delete(key);
        size--;
      } else {
        overlay.set(key, value);
        if (!had) size++;
      }
    }
    if (overlay.size === 0) return new Table(this.base, EMPTY, size);
    const table = new Table(this.base, overlay, size);
    return overlay.size > COMPACT_MIN + (this.base.size >> 4) ? Table.from(table) : table;
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this) yield k;
  }

  *[Symbol.iterator](): IterableIterator<[string, V]> {
    const overlay = this.overlay;
    if (overlay.size === 0) {
      yield* this.base;
      return;
    }
    for (const entry of this.base) {
      const o = overlay.get(entry[0]);
      if (o === undefined) yield entry;
      else if (o !== REMOVED) yield [entry[0], o];
    }
    for (const [k, o] of overlay) if (o !== REMOVED && !this.base.has(k)) yield [k, o];
  }

  /** The entries as a plain record (for comparing tables in tests and for reports). */
  toRecord(): Record<string, V> {
    const out: Record<string, V> = {};
    for (const [k, v] of this) out[k] = v;
    return out;
  }
}

const EMPTY: ReadonlyMap<string, never> = new Map<string, never>();

/** An overlay this small is never folded, whatever the base's size. */
const COMPACT_MIN = 32;
