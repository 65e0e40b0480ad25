/** Order statistics for the report. Shared machines are noisy, so every figure carries its spread. */

/** The p-th percentile (nearest rank) of a sample; NaN for an empty one. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

export const median = (xs: readonly number[]): number => percentile(xs, 50);

/** The summary every timing figure is quoted with. */
export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  /** Interquartile range: the spread, robust to the odd outlier a loaded machine produces. */
  readonly iqr: number;
}

export function summarize(xs: readonly number[]): Summary {
  return {
    n: xs.length,
    min: xs.length ? Math.min(...xs) : NaN,
    p50: percentile(xs, 50),
    p95: percentile(xs, 95),
    p99: percentile(xs, 99),
    max: xs.length ? Math.max(...xs) : NaN,
    iqr: percentile(xs, 75) - percentile(xs, 25),
  };
}

/** A number for a table: fixed decimals, "n/a" for NaN. */
export function fmt(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
