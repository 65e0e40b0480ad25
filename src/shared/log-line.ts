/**
 * How one log record reads on a terminal: a single line. An apply record (what the reconciler logs after it started
 * nginx, reloaded it or pushed endpoints) says what changed and how long it took; any other record is its message
 * followed by its fields as key=value, so nothing the JSON line carries is lost.
 */

/** The messages of apply records (src/reconciler/reconciler.ts), with the words a line uses for their action. */
const APPLY_MESSAGES: Readonly<Record<string, string>> = {
  "nginx started": "nginx started",
  "config applied": "config applied by reload",
  "endpoints pushed": "endpoints pushed",
};

/** Fields the pretty printer shows at the start of the line. */
const HIDDEN = new Set(["time", "level"]);

/** Names shown in full up to this many per kind; more are counted only, so a first start stays one short line. */
const MAX_NAMES = 3;

type Paint = (s: string) => string;
export interface LineColors {
  readonly gray?: Paint;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** "+2 routes (a.test:80/, a.test:80/api)" for one kind of change; null when nothing of it changed. */
function changePart(sign: string, noun: string, group: unknown, side: "added" | "removed"): string | null {
  if (!isRecord(group)) return null;
  const names = strings(group[side]);
  const count = typeof group[`${side}Count`] === "number" ? (group[`${side}Count`] as number) : names.length;
  if (count === 0) return null;
  const shown = count <= MAX_NAMES && names.length === count ? ` (${names.join(", ")})` : "";
  return `${sign}${plural(count, noun)}${shown}`;
}

function applyLine(verb: string, log: Record<string, unknown>, gray: Paint): string {
  const ms = isRecord(log["ms"]) && typeof log["ms"]["total"] === "number" ? log["ms"]["total"] : null;
  // The reconciler names an upstream by its route (domain:port/prefix), so "routes" is what an operator recognises.
  const parts = [
    changePart("+", "route", log["upstreams"], "added"),
    changePart("-", "route", log["upstreams"], "removed"),
    changePart("+", "endpoint", log["endpoints"], "added"),
    changePart("-", "endpoint", log["endpoints"], "removed"),
  ].filter((p): p is string => p !== null);
  const took = ms === null ? "" : ` in ${Math.round(ms)} ms`;
  const what = parts.length > 0 ? parts.join(", ") : "no route or endpoint changed";
  const reason = typeof log["reason"] === "string" && log["reason"] !== "" ? gray(` (${log["reason"]})`) : "";
  return `${verb}${took}: ${what}${reason}`;
}

/** A field value as it reads in key=value: bare when it has no space or quote, else JSON. */
function fieldValue(v: unknown): string {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** The one line of a log record (without time and level, which the pretty printer adds). */
export function humanLine(log: Record<string, unknown>, messageKey = "msg", colors: LineColors = {}): string {
  const gray = colors.gray ?? ((s: string) => s);
  const msg = typeof log[messageKey] === "string" ? (log[messageKey] as string) : "";
  const verb = APPLY_MESSAGES[msg];
  if (verb !== undefined && isRecord(log["ms"])) return applyLine(verb, log, gray);
  const fields = Object.entries(log)
    .filter(([k, v]) => k !== messageKey && !HIDDEN.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${fieldValue(v)}`);
  return fields.length > 0 ? `${msg} ${gray(fields.join(" "))}` : msg;
}
