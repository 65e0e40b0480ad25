const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration as operators write it (`500ms`, `30s`, `2m`, `1h`, or plain seconds) in ms; null when it is none. */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) return null;
  const ms = Number(m[1]) * (UNITS[m[2] ?? "s"] ?? 1000);
  return Number.isFinite(ms) ? Math.round(ms) : null;
}
