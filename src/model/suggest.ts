/** "Did you mean": the known name an unknown one most likely misspells. */

/** Edit distance counting an insertion, deletion, substitution or swap of two neighbours as one edit. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      const up = d[i - 1]!;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(up[j]! + 1, row[j - 1]! + 1, up[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  return d[a.length]![b.length]!;
}

/**
 * The candidate `word` most likely misspells, case and `-`/`_` ignored: one edit away, else one that contains it or
 * that it contains (`domain` for `domain_name`), else the nearest within a third of its length; ties go to the first
 * candidate. None when nothing is close.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/-/g, "_");
  const w = norm(word);
  let best: { name: string; distance: number } | undefined;
  for (const c of candidates) {
    const most = Math.max(1, Math.floor(c.length / 3));
    // The distance is at least the difference in length: skip the quadratic table for a far longer word.
    if (Math.abs(w.length - c.length) > most) continue;
    const distance = editDistance(w, norm(c));
    if (distance <= most && (best === undefined || distance < best.distance)) best = { name: c, distance };
  }
  // One edit is a typo; beyond that a name the word abbreviates (`ssl_cert`) is likelier than a near one (`ssl_port`).
  if (best && best.distance <= 1) return best.name;
  const part =
    w.length >= 4 && w.length <= 64 ? candidates.find((c) => norm(c).includes(w) || w.includes(norm(c))) : undefined;
  return part ?? best?.name;
}
