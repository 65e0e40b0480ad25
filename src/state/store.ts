import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { BackendSet } from "../model/backends.js";
import type { Services } from "../model/services.js";
import { writeFileAtomic } from "../shared/files.js";

/** What survives a controller restart: the last applied model and endpoints, and the control port. */
export interface PersistedState {
  readonly version: 1;
  readonly controlPort?: number;
  /** The secret endpoint pushes carry; kept so a controller restart renders the same config. */
  readonly pushToken?: string;
  readonly services?: Services;
  readonly backends?: BackendSet;
  readonly savedAt?: string;
}

/** state.json in the state dir; 0600 because the model holds TLS keys. */
export class StateStore {
  readonly file: string;
  constructor(dir: string) {
    this.file = join(dir, "state.json");
  }

  /** The persisted state, or an empty one when there is none or it is unreadable. */
  async load(): Promise<PersistedState> {
    try {
      const parsed = JSON.parse(await readFile(this.file, "utf8")) as PersistedState;
      return parsed.version === 1 ? parsed : { version: 1 };
    } catch {
      return { version: 1 };
    }
  }

  /** Replaces the persisted state atomically. */
  async save(state: PersistedState): Promise<void> {
    await writeFileAtomic(this.file, `${JSON.stringify(state)}\n`, 0o600);
  }
}
