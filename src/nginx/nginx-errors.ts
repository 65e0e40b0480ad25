/** A `bind() to ADDRESS:PORT failed (ERRNO: ...)` nginx logged: the port a start or reload could not take. */
export interface BindFailure {
  readonly address: string;
  readonly port: number;
  /** `in-use`: another process holds it; `denied`: a port under 1024 without root or CAP_NET_BIND_SERVICE. */
  readonly cause: "in-use" | "denied" | "other";
  readonly reason: string;
}

const BIND = /bind\(\) to (\S+):(\d+) failed \((\d+): ([^)]*)\)/;

/** The distinct ports nginx could not bind, in the order it logged them. */
export function bindFailures(text: string): BindFailure[] {
  const seen = new Map<string, BindFailure>();
  for (const line of text.split("\n")) {
    const m = BIND.exec(line);
    if (!m) continue;
    const [, address = "", port = "0", errno = "", reason = ""] = m;
    const cause = errno === "98" ? "in-use" : errno === "13" ? "denied" : "other";
    seen.set(`${address}:${port}`, { address, port: Number(port), cause, reason });
  }
  return [...seen.values()];
}

/** What to do about a port under 1024 nginx may not bind. */
export const PRIVILEGED_PORT_HINT =
  "ports under 1024 need root or CAP_NET_BIND_SERVICE: run nginx-lb as root, or grant it the capability " +
  "(systemd AmbientCapabilities=CAP_NET_BIND_SERVICE, or setcap cap_net_bind_service=+ep on the nginx binary)";

/** One bind failure in operator words; `holder` names who holds the port when that is known. */
export function describeBind(b: BindFailure, holder?: string): string {
  // nginx's own words (the errno text) stay: they are what an operator searches for.
  const where = `port ${b.port} (${b.address}:${b.port}): ${b.reason}`;
  if (b.cause === "in-use")
    return `${where}${holder ? `, ${holder}` : ""}: stop that process (a previous instance still draining frees it by itself) or change the server's port`;
  if (b.cause === "denied") return `${where}: ${PRIVILEGED_PORT_HINT}`;
  return where;
}

const LEVEL = /^\[\w+\] /;

/** An nginx log or stderr line without its time, level prefix and pid: the same cause reads the same every time. */
const bare = (line: string) =>
  line
    .trim()
    .replace(/^(.*?: )?nginx: (?=\[)/, "")
    .replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, "")
    .replace(/^\[(\w+)\] (\d+#\d+: )?/, "[$1] ");

/**
 * nginx's error text summarised once: each bind failure as its port and what to do (the holder from `holders` by
 * port), every other distinct error line once (the directive and file:line nginx names), without the repetitions
 * nginx logs per bind attempt and per worker. Text without nginx error lines comes back as it was.
 */
export function summariseNginxError(text: string, holders: ReadonlyMap<number, string> = new Map()): string {
  const binds = bindFailures(text);
  // Lines, or the " | "-joined causes the applier's log watch hands over.
  const lines = text.split(/\n| \| /).map(bare);
  const leveled = lines.some((l) => LEVEL.test(l));
  const rest = [
    ...new Set(
      lines
        .filter((l) => l !== "" && (leveled ? /^\[(emerg|alert|crit|error)\] /.test(l) : true))
        .filter((l) => !BIND.test(l) && !/still could not bind\(\)/.test(l))
        .map((l) => l.replace(LEVEL, "")),
    ),
  ];
  if (binds.length === 0 && (!leveled || rest.length === 0)) return text.trim();
  // The words before nginx's own ("nginx exited (code 1)") say what failed.
  const lead = /^(.*?):\s*nginx: \[/.exec(text)?.[1];
  const parts = [...binds.map((b) => describeBind(b, holders.get(b.port))), ...rest];
  return `${lead ? `${lead}: ` : ""}${parts.join("; ")}`;
}
