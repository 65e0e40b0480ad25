import { readdir, readFile, readlink } from "node:fs/promises";

/** A listening TCP socket as /proc/net/tcp{,6} lists it. */
export interface Listener {
  readonly address: string;
  readonly port: number;
  readonly uid: number;
  readonly inode: number;
}

/** Who holds a port: the process when this user may see its descriptors, else only the socket owner's uid. */
export type PortHolder =
  | { readonly port: number; readonly pid: number; readonly command: string; readonly uid: number }
  | { readonly port: number; readonly uid: number };

const LISTEN = "0A";

/** One 32-bit word of /proc's address notation: hex in host (little-endian) byte order. */
const wordBytes = (hex: string) => [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16));

function decodeAddress(hex: string): string {
  if (hex.length === 8) return wordBytes(hex).join(".");
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return `[${groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::")}]`;
}

/** The listening sockets of a /proc/net/tcp or tcp6 text (header and malformed lines skipped). */
export function parseProcNetTcp(text: string): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    const [local, state, uid, inode] = [f[1], f[3], f[7], f[9]];
    if (local === undefined || state !== LISTEN || uid === undefined || inode === undefined) continue;
    const m = /^([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4})$/i.exec(local);
    if (!m || !/^\d+$/.test(uid) || !/^\d+$/.test(inode)) continue;
    out.push({
      address: decodeAddress(m[1] ?? ""),
      port: parseInt(m[2] ?? "0", 16),
      uid: Number(uid),
      inode: Number(inode),
    });
  }
  return out;
}

/** A process name safe to show on a terminal (another user chooses it). */
const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, "?").slice(0, 64);

/**
 * The process listening on a TCP port, found as `ss -ltnp` does: the socket's inode in /proc/net/tcp{,6}, then the
 * process with a descriptor on `socket:[inode]`. The name is /proc/PID/comm, not the command line: another user's
 * arguments may hold secrets. Null when nothing listens there (or /proc cannot be read).
 */
export async function findPortHolder(port: number, proc = "/proc"): Promise<PortHolder | null> {
  const listeners: Listener[] = [];
  for (const file of ["net/tcp", "net/tcp6"])
    listeners.push(...parseProcNetTcp(await readFile(`${proc}/${file}`, "utf8").catch(() => "")));
  const mine = listeners.filter((l) => l.port === port);
  const first = mine[0];
  if (first === undefined) return null;
  const wanted = new Set(mine.map((l) => `socket:[${l.inode}]`));
  const pids = (await readdir(proc).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
  for (const pid of pids) {
    const fds = await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await readlink(`${proc}/${pid}/fd/${fd}`).catch(() => "");
      if (!wanted.has(link)) continue;
      const comm = await readFile(`${proc}/${pid}/comm`, "utf8").catch(() => "?");
      return { port, pid: Number(pid), command: printable(comm.trim()), uid: first.uid };
    }
  }
  return { port, uid: first.uid };
}

/** A holder as a message fragment: "held by pid 123 (python3)", or "held by a process of uid 1000". */
export function describeHolder(h: PortHolder): string {
  return "pid" in h
    ? `held by pid ${h.pid} (${h.command})`
    : `held by a process of uid ${h.uid} (run as root to see which)`;
}
