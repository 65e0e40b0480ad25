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
  /**
   * The saved control port, given up because the routing table now claims it, or because another process holds it
   * (`held`) while no nginx of this state dir runs to keep it: a new one was chosen.
   */
  readonly moved?: number;
  readonly held?: true;
}

/** How many ports the kernel is asked for before one outside the routing table's is taken anyway. */
const PICKS = 32;

/**
 * The control port and push token of this start: `--control-port` first, then control.json, then an older
 * state.json's copy (moved into control.json), else new ones. control.json is written only when they change.
 * `taken`: the ports the routing table claims. A new port is never one of them (the kernel hands out any port that is
 * free now, and a frontend port is free until nginx starts), and a saved one that is moves; a requested one stays
 * (the reconciler then refuses the servers that claim it). A saved port is kept for the nginx that serves on it; when
 * `held` says another process holds it and no nginx of ours does (a saved port is one the kernel handed out once, and
 * after a restart of the host any client's connection may have it), nginx could not start on it: it moves too.
 */
export async function resolveControl(
  store: ControlStore,
  legacy: { readonly controlPort?: number; readonly pushToken?: string },
  requestedPort: number | undefined,
  freePort: () => Promise<number>,
  newToken: () => string,
  taken: ReadonlySet<number> = new Set(),
  held: (port: number) => Promise<boolean> = async () => false,
): Promise<ResolvedControl> {
  const found = await store.load();
  const saved = found !== null && !("error" in found) ? found : null;
  const known = saved?.controlPort ?? legacy.controlPort;
  const lost = requestedPort === undefined && known !== undefined ? await givenUp(known, taken, held) : null;
  const moved = lost !== null ? { moved: known, ...(lost === "held" ? { held: true as const } : {}) } : {};
  const settings: ControlSettings = {
    controlPort: requestedPort ?? (known !== undefined && lost === null ? known : await pickPort(freePort, taken)),
    pushToken: saved?.pushToken ?? (legacy.pushToken && TOKEN.test(legacy.pushToken) ? legacy.pushToken : newToken()),
  };
  const unusable = found !== null && "error" in found ? { unusable: found.error } : {};
  if (saved?.controlPort === settings.controlPort && saved.pushToken === settings.pushToken)
    return { settings, ...unusable };
  try {
    await store.save(settings);
    return { settings, ...unusable, ...moved };
  } catch (e) {
    return { settings, ...unusable, ...moved, saveError: (e as Error).message };
  }
}

/** Why a saved (not requested) control port is given up, if it is: the routing table claims it, or another holds it. */
async function givenUp(
  port: number,
  taken: ReadonlySet<number>,
  held: (port: number) => Promise<boolean>,
): Promise<"taken" | "held" | null> {
  if (taken.has(port)) return "taken";
  return (await held(port)) ? "held" : null;
}

async function pickPort(freePort: () => Promise<number>, taken: ReadonlySet<number>): Promise<number> {
  let port = await freePort();
  for (let i = 1; i < PICKS && taken.has(port); i++) port = await freePort();
  return port;
}
