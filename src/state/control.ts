import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../shared/files.js";

/**
 * The control port and push token an nginx of this state dir was rendered with. They live in their own file, apart
 * from state.json: state.json is rewritten after every apply (and can be cut short by a full disk or a crash), while
 * this is written once. A corrupt state.json then loses neither, and a restarted controller still reaches (and may
 * push to) the nginx it adopts.
 */
export interface ControlSettings {
  readonly controlPort: number;
  readonly pushToken: string;
}

const TOKEN = /^[0-9a-f]{32,128}$/;

/** control.json in the state dir, 0600: the token lets its holder change every route's endpoints. */
export class ControlStore {
  readonly file: string;
  constructor(dir: string) {
    this.file = join(dir, "control.json");
  }

  /** The saved settings; null when there are none, or `{ error }` when the file is there but unusable. */
  async load(): Promise<ControlSettings | null | { readonly error: string }> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ENOENT" ? null : { error: (e as Error).message };
    }
    try {
      const v = JSON.parse(text) as Partial<ControlSettings>;
      const port = v.controlPort;
      if (typeof port === "number" && Number.isInteger(port) && port > 0 && port < 65536)
        if (typeof v.pushToken === "string" && TOKEN.test(v.pushToken))
          return { controlPort: port, pushToken: v.pushToken };
      return { error: "controlPort or pushToken missing or malformed" };
    } catch (e) {
      return { error: `not valid JSON: ${(e as Error).message}` };
    }
  }

  async save(settings: ControlSettings): Promise<void> {
    await writeFileAtomic(this.file, `${JSON.stringify(settings)}\n`, 0o600);
  }
}

/** Where the control settings of a start come from, for the log. */
export interface ResolvedControl {
  readonly settings: ControlSettings;
  /** The unusable control.json, if one was found (then new settings were made). */
  readonly unusable?: string;
  /** A failed write of control.json (the settings hold for this run; a restart would make new ones). */
  readonly saveError?: string;
}

/**
 * The control port and push token of this start: `--control-port` first, then control.json, then an older
 * state.json's copy (moved into control.json), else new ones. control.json is written only when they change.
 */
export async function resolveControl(
  store: ControlStore,
  legacy: { readonly controlPort?: number; readonly pushToken?: string },
  requestedPort: number | undefined,
  freePort: () => Promise<number>,
  newToken: () => string,
): Promise<ResolvedControl> {
  const found = await store.load();
  const saved = found !== null && !("error" in found) ? found : null;
  const settings: ControlSettings = {
    controlPort: requestedPort ?? saved?.controlPort ?? legacy.controlPort ?? (await freePort()),
    pushToken: saved?.pushToken ?? (legacy.pushToken && TOKEN.test(legacy.pushToken) ? legacy.pushToken : newToken()),
  };
  const unusable = found !== null && "error" in found ? { unusable: found.error } : {};
  if (saved?.controlPort === settings.controlPort && saved.pushToken === settings.pushToken)
    return { settings, ...unusable };
  try {
    await store.save(settings);
    return { settings, ...unusable };
  } catch (e) {
    return { settings, ...unusable, saveError: (e as Error).message };
  }
}
