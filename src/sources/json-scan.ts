/**
 * A JSON syntax scanner that says what JSON.parse does not: where a syntax error is (line and column, with an
 * operator's explanation) and which object keys appear twice (JSON.parse silently keeps the last one). It accepts
 * exactly the texts JSON.parse accepts (property-tested); callers still take the value from JSON.parse.
 * Iterative, so deep nesting cannot overflow the stack.
 */

export interface JsonPosition {
  /** 1-based line. */
  readonly line: number;
  /** 1-based column, in characters (UTF-16 code units). */
  readonly column: number;
}

export interface JsonSyntaxError extends JsonPosition {
  readonly message: string;
}

export interface DuplicateKey {
  /** Path of the repeated key: object keys and array indices from the document root. */
  readonly path: readonly (string | number)[];
  /** Where the key first appeared and where it appeared again (JSON.parse keeps the value of the last). */
  readonly first: JsonPosition;
  readonly again: JsonPosition;
}

export interface JsonScan {
  /** The first syntax error, or null when the text is JSON. */
  readonly error: JsonSyntaxError | null;
  /** Keys repeated within one object, in text order (only complete up to a syntax error). */
  readonly duplicates: readonly DuplicateKey[];
}

type Frame =
  | { readonly object: true; readonly open: number; readonly keys: Map<string, number>; key: string }
  | { readonly object: false; readonly open: number; index: number };

/** Maps character offsets to lines and columns; the line starts are found once, then each lookup is a binary search. */
function locator(text: string): (offset: number) => JsonPosition {
  let starts: number[] | null = null;
  return (offset) => {
    if (starts === null) {
      starts = [0];
      for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) starts.push(i + 1);
    }
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((starts[mid] ?? 0) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - (starts[lo] ?? 0) + 1 };
  };
}

function show(c: string): string {
  const code = c.charCodeAt(0);
  return code > 0x20 && code < 0x7f ? `"${c}"` : `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
}

const ESCAPES = new Set(['"', "\\", "/", "b", "f", "n", "r", "t"]);
const HEX = /^[0-9A-Fa-f]{4}$/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const CONTROL_ESCAPE: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

class Failure {
  constructor(
    readonly offset: number,
    readonly message: string,
  ) {}
}

/** Scans `text` (without a byte-order mark) as JSON. */
export function scanJson(text: string): JsonScan {
  const duplicates: DuplicateKey[] = [];
  const n = text.length;
  let i = 0;
  const stack: Frame[] = [];
  const positionAt = locator(text);

  const skipWs = () => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\n" || c === "\r" || c === "\t") i++;
      else break;
    }
  };
  const isComment = () => text[i] === "/" && (text[i + 1] === "/" || text[i + 1] === "*");
  const fail = (message: string, at = i): never => {
    throw new Failure(at, message);
  };
  const unexpected = (expected: string): never => {
    if (i >= n) {
      const open = stack.at(-1);
      if (!open) return fail(n === 0 || text.trim() === "" ? "the file is empty" : `the file ends where ${expected}`);
      const p = positionAt(open.open);
      return fail(
        `the file ends before the ${open.object ? "{" : "["} opened at line ${p.line} column ${p.column} is closed`,
      );
    }
    const c = text[i] ?? "";
    if (c === "'") return fail(`${expected}; JSON strings use double quotes, not single quotes`);
    if (isComment()) return fail("JSON allows no comments");
    return fail(`unexpected ${show(c)} where ${expected}`);
  };

  /** Reads the string starting at text[i] === '"'; returns its end offset (after the closing quote). */
  const string = (): number => {
    const start = i;
    i++;
    for (;;) {
      if (i >= n) return fail('the string is never closed (a " is missing)', start);
      const c = text[i] ?? "";
      if (c === '"') return ++i;
      if (c === "\\") {
        const e = text[i + 1] ?? "";
        if (e === "u") {
          if (!HEX.test(text.slice(i + 2, i + 6))) fail("\\u must be followed by 4 hex digits");
          i += 6;
        } else if (ESCAPES.has(e)) i += 2;
        else if (e === "") i++;
        else
          return fail(
            `invalid escape: ${show(e)} after a backslash in a string (JSON knows \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)`,
          );
      } else if (c < " ") {
        return fail(`a raw control character ${show(c)} in a string: write it as ${CONTROL_ESCAPE[c] ?? "\\u00XX"}`);
      } else i++;
    }
  };

  /** Reads a value that starts at text[i] (after whitespace); returns true when it opened a container. */
  const value = (): boolean => {
    const c = text[i];
    if (c === "{" || c === "[") {
      stack.push(
        c === "{" ? { object: true, open: i, keys: new Map(), key: "" } : { object: false, open: i, index: 0 },
      );
      i++;
      return true;
    }
    if (c === '"') {
      string();
      return false;
    }
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      const end = m ? i + m[0].length : i;
      const next = text[end];
      if (end === i) return fail(`invalid number: a digit must follow "-"`);
      if (next !== undefined && /[0-9.eE+-]/.test(next))
        return fail(
          c === "0" || text.startsWith("-0", i)
            ? "invalid number: no leading zeros, and a digit must follow . or e"
            : "invalid number: a digit must follow . or e",
          i,
        );
      i = end;
      return false;
    }
    for (const word of ["true", "false", "null"])
      if (text.startsWith(word, i)) {
        i += word.length;
        return false;
      }
    return unexpected("a value was expected");
  };

  /** After `{` or `,` in an object: reads `"key":` and leaves i at the value. */
  const key = (frame: Frame & { object: true }) => {
    if (text[i] !== '"') unexpected("a property name in double quotes was expected");
    const start = i;
    const end = string();
    const k = JSON.parse(text.slice(start, end)) as string;
    const first = frame.keys.get(k);
    frame.key = k;
    if (first === undefined) frame.keys.set(k, start);
    else
      duplicates.push({
        path: stack.map((f) => (f.object ? f.key : f.index)),
        first: positionAt(first),
        again: positionAt(start),
      });
    skipWs();
    if (text[i] !== ":") unexpected('a ":" was expected after the property name');
    i++;
    skipWs();
  };

  try {
    skipWs();
    let opened = value();
    for (;;) {
      skipWs();
      const top = stack.at(-1);
      if (top === undefined) {
        if (isComment()) fail("JSON allows no comments");
        if (i < n) fail(`unexpected ${show(text[i] ?? "")} after the end of the JSON value`);
        return { error: null, duplicates };
      }
      const close = top.object ? "}" : "]";
      if (opened && text[i] === close) {
        stack.pop();
        i++;
        opened = false;
        continue;
      }
      if (!opened) {
        if (text[i] === close) {
          stack.pop();
          i++;
          continue;
        }
        if (text[i] !== ",") {
          const c = text[i];
          const missing = c === '"' || c === "{" || c === "[" || (c !== undefined && /[-0-9tfn]/.test(c));
          unexpected(missing ? `a "," was expected (one is missing before this)` : `"," or "${close}" was expected`);
        }
        const comma = i;
        i++;
        skipWs();
        if (text[i] === close) fail(`a "," before "${close}": JSON allows no trailing comma`, comma);
        if (!top.object) top.index++;
      }
      if (top.object) key(top);
      opened = value();
    }
  } catch (e) {
    if (!(e instanceof Failure)) throw e;
    return { error: { ...positionAt(e.offset), message: e.message }, duplicates };
  }
}
