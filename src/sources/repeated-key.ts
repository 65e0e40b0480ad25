/**
 * Whether a JSON text that JSON.parse accepted repeats a key within one of its objects, told from the text and the
 * value JSON.parse made of it: JSON.parse keeps one entry per repeated key, so the text repeats a key exactly when it
 * holds more keys than the value does. In JSON that parses, every `"` outside a string opens one and every string
 * followed by a `:` is a key, so one pass of a regular expression counts the text's keys. This is the clean file's
 * fast path (services-text.ts reads every server of a 10,000-site file at start); json-scan.ts stays the reader that
 * says where a key repeats. Equal to `scanJson(text).duplicates.length > 0` for any text JSON.parse accepts
 * (repeated-key.test.ts).
 */

/** A string token and, when it is a key, its colon. */
const STRING = /"[^"\\]*(?:\\[^][^"\\]*)*"([ \t\n\r]*:)?/g;

/** `value` must be what `JSON.parse(text)` returned. */
export function repeatsKey(text: string, value: unknown): boolean {
  let written = 0;
  STRING.lastIndex = 0;
  for (let m = STRING.exec(text); m !== null; m = STRING.exec(text)) if (m[1] !== undefined) written++;
  return written !== keysIn(value);
}

/** The keys of every object in a parsed JSON value (a stack, not recursion: nesting is the text's to choose). */
function keysIn(value: unknown): number {
  let n = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== "object" || v === null) continue;
    if (Array.isArray(v)) {
      for (const x of v) if (typeof x === "object" && x !== null) stack.push(x);
      continue;
    }
    const keys = Object.keys(v);
    n += keys.length;
    for (const k of keys) {
      const x = (v as Record<string, unknown>)[k];
      if (typeof x === "object" && x !== null) stack.push(x);
    }
  }
  return n;
}
