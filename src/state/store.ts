import { readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { BackendSet } from "../model/backends.js";
import type { Services } from "../model/services.js";
import { writeFileAtomic } from "../shared/files.js";

/** What survives a controller restart: the last applied model and endpoints. */
export interface PersistedState {
  readonly version: 1;
  /** Read from an older state.json only: the control port and push token now live in control.json. */
  readonly controlPort?: number;
  readonly pushToken?: string;
  readonly services?: Services;
  readonly backends?: BackendSet;
  readonly savedAt?: string;
}

/** What `load` found: nothing, a state, or a file it could not use (moved aside, so the next save starts clean). */
export type LoadedState =
  | { readonly kind: "none"; readonly state: PersistedState }
  | { readonly kind: "ok"; readonly state: PersistedState }
  | {
      readonly kind: "corrupt";
      readonly state: PersistedState;
      readonly file: string;
      readonly error: string;
      /** Where the unusable file went, or null when it could not be moved (then `moveError` says why). */
      readonly movedTo: string | null;
      readonly moveError?: string;
    };

const EMPTY: PersistedState = { version: 1 };
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Why a parsed state.json cannot be used, or null when its shape is right. */
function shapeError(v: unknown): string | null {
  if (!isObject(v)) return "not a JSON object";
  if (v["version"] !== 1) return `unknown version ${JSON.stringify(v["version"])}`;
  if (v["services"] !== undefined && !(isObject(v["services"]) && Array.isArray(v["services"]["servers"])))
    return "services is not a routing model";
  if (v["backends"] !== undefined && !isObject(v["backends"])) return "backends is not an object";
  return null;
}

/** state.json in the state dir; 0600 because the model holds TLS keys. */
export class StateStore {
  readonly file: string;
  constructor(
    dir: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.file = join(dir, "state.json");
  }

  /**
   * The persisted state. A file that cannot be read or parsed is never taken for an empty state silently: it is moved
   * aside to `state.json.corrupt-<time>` (kept for the operator) and reported, so the caller can say what it lost.
   */
  async load(): Promise<LoadedState> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { kind: "none", state: EMPTY };
      return this.corrupt((e as Error).message);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      return this.corrupt(`not valid JSON: ${(e as Error).message}`);
    }
    const why = shapeError(parsed);
    return why === null ? { kind: "ok", state: parsed as PersistedState } : this.corrupt(why);
  }

  private async corrupt(error: string): Promise<LoadedState> {
    const to = `${this.file}.corrupt-${this.now().toISOString().replace(/[:.]/g, "-")}`;
    try {
      await rename(this.file, to);
      return { kind: "corrupt", state: EMPTY, file: this.file, error, movedTo: to };
    } catch (e) {
      return { kind: "corrupt", state: EMPTY, file: this.file, error, movedTo: null, moveError: (e as Error).message };
    }
  }

  /** Each server's and each backend's JSON text by object: saves after a change re-encode only what changed. */
  private readonly encoded = new WeakMap<object, string>();

  /** Replaces the persisted state atomically. */
  async save(state: PersistedState): Promise<void> {
    await writeFileAtomic(this.file, stateText(state, this.encoded), 0o600);
  }
}

/**
 * `${JSON.stringify(state)}\n` in pieces, one per server and per backend's endpoints: at 100,000 endpoints the whole
 * text is megabytes, which the writer then never holds at once. Each piece is kept by its object in `encoded`, so a
 * save after one change encodes that change (the model and the registry share unchanged objects between states).
 */
export function* stateText(state: PersistedState, encoded = new WeakMap<object, string>()): Generator<string> {
  const piece = (v: object): string => {
    let text = encoded.get(v);
    if (text === undefined) {
      text = JSON.stringify(v);
      encoded.set(v, text);
    }
    return text;
  };
  let first = true;
  for (const [key, value] of Object.entries(state)) {
    if (value === undefined) continue;
    yield `${first ? "{" : ","}${JSON.stringify(key)}:`;
    first = false;
    if (key === "services" && isObject(value) && Object.keys(value).length === 1 && Array.isArray(value["servers"])) {
      const servers = value["servers"] as unknown[];
      yield '{"servers":[';
      for (const [i, server] of servers.entries())
        yield `${i > 0 ? "," : ""}${typeof server === "object" && server !== null ? piece(server) : JSON.stringify(server ?? null)}`;
      yield "]}";
      continue;
    }
    if (key !== "backends" || !isObject(value)) {
      yield JSON.stringify(value);
      continue;
    }
    let firstName = true;
    // Names, not entries: an entry is a pair array per backend, garbage at every save.
    for (const name of Object.keys(value)) {
      const eps = value[name];
      if (eps === undefined) continue;
      const text = typeof eps === "object" && eps !== null ? piece(eps) : JSON.stringify(eps);
      yield `${firstName ? "{" : ","}${JSON.stringify(name)}:${text}`;
      firstName = false;
    }
    yield firstName ? "{}" : "}";
  }
  yield first ? "{}\n" : "}\n";
}

/** The routing table last read from etcd (`run --services-etcd-prefix`): its keys as etcd held them, and the revision. */
export interface PersistedTable {
  readonly version: 1;
  readonly prefix: string;
  readonly revision: number;
  readonly entries: readonly { readonly key: string; readonly value: string; readonly createRevision: number }[];
  readonly savedAt?: string;
}

/**
 * services-etcd.json in the state dir, beside state.json: a controller that starts while etcd is down serves the
 * last known table, and still knows which keys were rejected and why. 0600: values hold TLS keys.
 */
export class TableStore {
  readonly file: string;
  constructor(dir: string) {
    this.file = join(dir, "services-etcd.json");
  }

  /** The saved table for `prefix`; null when there is none, it is unreadable, or it belongs to another prefix. */
  async load(prefix: string): Promise<{ table: PersistedTable | null; error?: string }> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { table: null };
      return { table: null, error: (e as Error).message };
    }
    try {
      const v = JSON.parse(text) as unknown;
      if (
        !isObject(v) ||
        v["version"] !== 1 ||
        typeof v["revision"] !== "number" ||
        !Array.isArray(v["entries"]) ||
        !v["entries"].every(
          (e) =>
            isObject(e) &&
            typeof e["key"] === "string" &&
            typeof e["value"] === "string" &&
            typeof e["createRevision"] === "number",
        )
      )
        return { table: null, error: "not a saved routing table" };
      return { table: v["prefix"] === prefix ? (v as unknown as PersistedTable) : null };
    } catch (e) {
      return { table: null, error: `not valid JSON: ${(e as Error).message}` };
    }
  }

  async save(table: PersistedTable): Promise<void> {
    await writeFileAtomic(this.file, `${JSON.stringify(table)}\n`, 0o600);
  }
}
