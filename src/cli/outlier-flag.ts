import type { OutlierSettings } from "../render/options.js";
import { DEFAULT_OUTLIER } from "../render/dynamic.js";
import { parseDuration } from "./duration.js";

/** `--outlier-ejection`'s default, as written. */
export const OUTLIER_DEFAULT_TEXT = "5,30s,300s,50%";

const HOUR = 3_600_000;

/**
 * `--outlier-ejection <errors>[,<first>[,<longest>[,<percent>%]]]` or `off` (pure): failed requests in a row that
 * eject an endpoint (dynamic mode), the first and the longest ejection, and the most of a route's endpoints ejected
 * at once. Omitted parts keep their defaults. Returns the settings, or what to write instead.
 */
export function parseOutlierFlag(text: string): { ok: true; value: OutlierSettings } | { ok: false; why: string } {
  const usage = `${JSON.stringify(text)}: give <errors>[,<first ejection>[,<longest>[,<percent>%]]] such as ${OUTLIER_DEFAULT_TEXT}, or off`;
  if (text.trim() === "off") return { ok: true, value: { ...DEFAULT_OUTLIER, errors: 0 } };
  const parts = text.split(",").map((p) => p.trim());
  if (parts.length > 4) return { ok: false, why: usage };
  const [e, b, m, p] = parts;
  const errors = e !== undefined && /^\d{1,4}$/.test(e) ? Number(e) : NaN;
  const baseMs = b === undefined ? DEFAULT_OUTLIER.baseMs : (parseDuration(b) ?? NaN);
  const maxMs = m === undefined ? Math.max(DEFAULT_OUTLIER.maxMs, baseMs) : (parseDuration(m) ?? NaN);
  const pm = p === undefined ? null : /^(\d{1,3})%$/.exec(p);
  const maxPercent = p === undefined ? DEFAULT_OUTLIER.maxPercent : pm ? Number(pm[1]) : NaN;
  if ([errors, baseMs, maxMs, maxPercent].some((n) => !Number.isInteger(n))) return { ok: false, why: usage };
  if (errors < 1 || errors > 1000) return { ok: false, why: `${usage} (errors from 1 to 1000; off turns it off)` };
  if (baseMs < 100 || maxMs > HOUR || maxMs < baseMs)
    return { ok: false, why: `${usage} (ejections from 100ms to 1h, the longest at least the first)` };
  if (maxPercent < 1 || maxPercent > 100) return { ok: false, why: `${usage} (percent from 1% to 100%)` };
  return { ok: true, value: { errors, baseMs, maxMs, maxPercent } };
}
