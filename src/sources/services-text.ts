/**
 * services.json text -> the validated routing model, reading again only what changed since the previous read. A
 * config centre rewrites the whole file to change one site; at 10,000 sites parsing and checking all of it again
 * would cost the change hundreds of milliseconds. The previous read keeps where each server's text sits and its
 * check; the new text is compared with the old one (common head and tail, compared natively), and only the servers
 * between are parsed, scanned for repeated keys and checked again. The cross-server checks run over all servers,
 * which is a map lookup each.
 *
 * Only a clean file takes this path: valid JSON, no repeated key, nothing the schema warns about, no `__proto__` route
 * key. Anything else (and any text this reader does not follow) is parsed whole, as `parseServicesText`, so every
 * error and warning is worded exactly as a whole read words it. The result always equals `parseServicesText(text)`.
 *
 * The file as read (`readServicesFile`) is compared as bytes when it is ASCII, as config centres write it: the new
 * bytes are compared with the previous read's natively, and only the part between the shared head and tail is made a
 * string. Making the whole file a string again (megabytes, in V8's large-object space, on fresh pages) would cost the
 * change more than reading its changed server, and leave that much garbage per change. Other files are read as text.
 */
import { isAscii } from "node:buffer";
import { type Checked, withWarnings } from "../model/problem.js";
import {
  assembleServers,
  checkRawServer,
  cleanFileFields,
  parseServices,
  type ParseOptions,
  type ServerCheck,
  type Services,
} from "../model/services.js";
import { parseJsonText } from "./read-json.js";
import { repeatsKey } from "./repeated-key.js";
import { indexClaims, nextClaims, type ClaimIndex } from "./server-claims.js";

/** Where the servers of a clean file sit in its text (offsets), and each server's check. */
interface Layout {
  /** The offset of the servers list's `[` and of its `]`. */
  readonly open: number;
  readonly close: number;
  /** Each server's text is `text.slice(starts[i], ends[i])`. */
  readonly starts: readonly number[];
  readonly ends: readonly number[];
  readonly checks: readonly ServerCheck[];
  /** The servers' claims when the file is clean (server-claims.ts), else null. */
  readonly claims: ClaimIndex | null;
}

/**
 * One read: what was read, its result, and what the next read may reuse (null: the next read parses the whole text).
 * A read of text keeps the text (`layout` offsets are UTF-16 units); a read of an ASCII file keeps its bytes
 * (offsets are bytes, the same units there), and the next read of the file compares bytes.
 */
export interface ServicesRead {
  readonly text: string | null;
  readonly bytes: Buffer | null;
  readonly result: Checked<Services>;
  readonly layout: Layout | null;
}

/** The whole-text parse: JSON (syntax errors with line and column, repeated keys), then every check of the file. */
export function parseServicesText(text: string, options: ParseOptions = {}): Checked<Services> {
  const json = parseJsonText(text);
  if (!json.ok) return json;
  return withWarnings(parseServices(json.value, options), json.warnings);
}

/** Reads `text`, reusing the previous read's checks of servers whose text did not change (pure). */
export function readServicesText(
  text: string,
  previous: ServicesRead | null,
  options: ParseOptions = {},
): ServicesRead {
  const source: Source<string> = {
    now: text,
    before: previous?.text ?? null,
    head: commonHead,
    tail: commonTail,
    window: () => ({ text, base: 0 }),
    whole: () => text,
    kept: { text, bytes: null },
  };
  return readSource(source, previous, options);
}

/**
 * `readServicesText` of the file's bytes (UTF-8), with the same result (pure). An ASCII file is compared with the
 * previous read's bytes and only its changed part is made a string (see the module comment).
 */
export function readServicesFile(
  bytes: Buffer,
  previous: ServicesRead | null,
  options: ParseOptions = {},
): ServicesRead {
  if (!isAscii(bytes)) return readServicesText(bytes.toString("utf8"), previous, options);
  const source: Source<Buffer> = {
    now: bytes,
    before: previous?.bytes ?? null,
    head: commonHeadBytes,
    tail: commonTailBytes,
    // One byte a character in ASCII: byte offsets are the string's offsets.
    window: (from, until) => ({ text: bytes.toString("latin1", from, Math.min(until, bytes.length)), base: from }),
    whole: () => bytes.toString("utf8"),
    kept: { text: null, bytes },
  };
  return readSource(source, previous, options);
}

/**
 * What a read compares and reads: the new file and the previous read's of the same kind (null when that read kept
 * none), as text or as ASCII bytes. Offsets are in the units of both.
 */
interface Source<T extends string | Buffer> {
  readonly now: T;
  readonly before: T | null;
  /** How many leading units `a` and `b` share. */
  head(a: T, b: T): number;
  /** How many trailing units `a` and `b` share, at most `max`. */
  tail(a: T, b: T, max: number): number;
  /** The new file from `from` on, at least to `until` (or its end), as a string and the offset it starts at. */
  window(from: number, until: number): { readonly text: string; readonly base: number };
  /** The whole new file as a string. */
  whole(): string;
  /** What the read keeps for the next one to compare with. */
  readonly kept: { readonly text: string | null; readonly bytes: Buffer | null };
}

/** The read of `source`, reusing the previous read's layout when that read kept the same kind of file (pure). */
function readSource<T extends string | Buffer>(
  source: Source<T>,
  previous: ServicesRead | null,
  options: ParseOptions,
): ServicesRead {
  const { now, before } = source;
  const old = previous?.layout ?? null;
  if (previous === null || before === null || old === null)
    return finish(null, null, source.whole, options, source.kept);
  // The shared head, found once: `===` on two long texts that differ near their ends compares them in full as well.
  const head = source.head(before, now);
  if (head === now.length && head === before.length) return { ...previous, ...source.kept };
  const tail = source.tail(before, now, Math.min(before.length, now.length) - head);
  const edit = changedLayout(old, before.length, now.length, head, tail, source.window, options);
  return finish(edit, old, source.whole, options, source.kept);
}

/** The read from an edit of the previous layout, or (no edit) from the whole text. */
function finish(
  edit: { layout: Layout; removed: readonly ServerCheck[]; added: readonly ServerCheck[] } | null,
  old: Layout | null,
  whole: () => string,
  options: ParseOptions,
  read: { readonly text: string | null; readonly bytes: Buffer | null },
): ServicesRead {
  let layout = edit?.layout ?? null;
  if (layout === null) {
    const text = whole();
    layout = freshLayout(text, options);
    if (layout === null) return { ...read, result: parseServicesText(text, options), layout: null };
  }
  // A clean file stays clean unless a changed server's claims meet another's: then the servers are the result.
  const claims = edit && old?.claims ? nextClaims(old.claims, edit.removed, edit.added, layout.checks.length) : null;
  if (claims !== null) {
    const value: Services = { servers: layout.checks.map((c) => c.server) };
    return { ...read, result: { ok: true, value, warnings: [] }, layout: { ...layout, claims } };
  }
  const result = assembleServers(layout.checks);
  const clean = result.ok && result.warnings.length === 0;
  return { ...read, result, layout: { ...layout, claims: clean ? indexClaims(layout.checks) : null } };
}

const WS = /[ \t\n\r]*/y;
const STRING = /"(?:[^"\\]|\\[^])*"/y;
const SCALAR = /[^,\]}\s]*/y;
const STRUCTURE = /[{}[\]"]/g;

function skipWs(text: string, i: number): number {
  WS.lastIndex = i;
  WS.exec(text);
  return WS.lastIndex;
}

/** The end of the string starting at `i` (a `"`), or -1. */
function stringEnd(text: string, i: number): number {
  STRING.lastIndex = i;
  return STRING.exec(text) === null ? -1 : STRING.lastIndex;
}

/**
 * The end of the JSON value starting at `i`, or -1 when it plainly is none. Only finds the extent: what it returns is
 * validated by JSON.parse afterwards, so text it misreads is refused there, never accepted.
 */
function valueEnd(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c !== "{" && c !== "[") {
    SCALAR.lastIndex = i;
    SCALAR.exec(text);
    return SCALAR.lastIndex > i ? SCALAR.lastIndex : -1;
  }
  let depth = 0;
  STRUCTURE.lastIndex = i;
  for (let m = STRUCTURE.exec(text); m !== null; m = STRUCTURE.exec(text)) {
    const ch = m[0];
    if (ch === '"') {
      const end = stringEnd(text, m.index);
      if (end < 0) return -1;
      STRUCTURE.lastIndex = end;
    } else if (ch === "{" || ch === "[") depth++;
    else if (--depth === 0) return m.index + 1;
  }
  return -1;
}

/** A server's text checked alone: null unless it is one clean JSON object (see the module comment). */
function checkSlice(slice: string, options: ParseOptions): ServerCheck | null {
  let raw: unknown;
  try {
    raw = JSON.parse(slice) as unknown;
  } catch {
    return null;
  }
  // A repeated key is left to the whole read, which says where it is.
  if (repeatsKey(slice, raw)) return null;
  return checkRawServer(raw, options);
}

/**
 * Reads the servers of the list from `i` (just after `[`, or just after a server when `afterServer`) to its `]`,
 * stopping early where `resync(offset)` says the rest is known. Null when the text is not a list of objects.
 */
function readServers(
  text: string,
  i: number,
  afterServer: boolean,
  options: ParseOptions,
  resync: (offset: number) => boolean,
): { starts: number[]; ends: number[]; checks: ServerCheck[]; stop: number; closed: boolean } | null {
  const starts: number[] = [];
  const ends: number[] = [];
  const checks: ServerCheck[] = [];
  let expectServer = !afterServer;
  let first = !afterServer;
  for (;;) {
    i = skipWs(text, i);
    if (!expectServer) {
      if (text[i] === "]") return { starts, ends, checks, stop: i, closed: true };
      if (text[i] !== ",") return null;
      i = skipWs(text, i + 1);
      expectServer = true;
      first = false;
    }
    if (first && text[i] === "]") return { starts, ends, checks, stop: i, closed: true };
    if (resync(i)) return { starts, ends, checks, stop: i, closed: false };
    if (text[i] !== "{") return null;
    const end = valueEnd(text, i);
    if (end < 0) return null;
    const check = checkSlice(text.slice(i, end), options);
    if (check === null) return null;
    starts.push(i);
    ends.push(end);
    checks.push(check);
    i = end;
    expectServer = false;
  }
}

/** The layout of a clean file read from scratch, or null (see the module comment). */
function freshLayout(text: string, options: ParseOptions): Layout | null {
  let i = skipWs(text, text.charCodeAt(0) === 0xfeff ? 1 : 0);
  if (text[i] !== "{") return null;
  i = skipWs(text, i + 1);
  let found: Layout | null = null;
  while (text[i] === '"') {
    const keyEnd = stringEnd(text, i);
    if (keyEnd < 0) return null;
    let key: unknown;
    try {
      key = JSON.parse(text.slice(i, keyEnd));
    } catch {
      return null;
    }
    i = skipWs(text, keyEnd);
    if (text[i] !== ":") return null;
    i = skipWs(text, i + 1);
    if (key === "servers") {
      // A repeated "servers" key: JSON.parse keeps the last, and the whole read says so.
      if (found !== null || text[i] !== "[") return null;
      const read = readServers(text, i + 1, false, options, () => false);
      if (read === null) return null;
      found = { open: i, close: read.stop, starts: read.starts, ends: read.ends, checks: read.checks, claims: null };
      i = read.stop + 1;
    } else {
      const end = valueEnd(text, i);
      if (end < 0) return null;
      i = end;
    }
    i = skipWs(text, i);
    if (text[i] !== ",") break;
    i = skipWs(text, i + 1);
  }
  if (found === null || !cleanSkeleton(text, found)) return null;
  return found;
}

/** The file without its servers is valid JSON, repeats no key and passes the schema without a word. */
function cleanSkeleton(text: string, layout: Layout): boolean {
  const json = parseJsonText(text.slice(0, layout.open + 1) + text.slice(layout.close));
  if (!json.ok || json.warnings.length > 0) return false;
  const raw = json.value;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return false;
  const servers = (raw as Record<string, unknown>)["servers"];
  return Array.isArray(servers) && servers.length === 0 && cleanFileFields(raw as Record<string, unknown>);
}

/** How many leading characters two texts share (compared in native slices, then one by one). */
function commonHead(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  for (let step = 1 << 16; step >= 1 && i < n; step >>= 2)
    while (i + step <= n && a.slice(i, i + step) === b.slice(i, i + step)) i += step;
  return i;
}

/** How many leading bytes two buffers share (compared natively, in ranges that shrink). */
function commonHeadBytes(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  for (let step = 1 << 16; step >= 1 && i < n; step >>= 2)
    while (i + step <= n && a.compare(b, i, i + step, i, i + step) === 0) i += step;
  return i;
}

/** How many trailing bytes two buffers share, at most `max`. */
function commonTailBytes(a: Buffer, b: Buffer, max: number): number {
  let k = 0;
  for (let step = 1 << 16; step >= 1 && k < max; step >>= 2)
    while (k + step <= max && b.compare(a, a.length - k - step, a.length - k, b.length - k - step, b.length - k) === 0)
      k += step;
  return k;
}

/** How many trailing characters two texts share, at most `max`. */
function commonTail(a: string, b: string, max: number): number {
  let k = 0;
  for (let step = 1 << 16; step >= 1 && k < max; step >>= 2)
    while (k + step <= max && a.slice(a.length - k - step, a.length - k) === b.slice(b.length - k - step, b.length - k))
      k += step;
  return k;
}

/** The first index whose value is above `x` in an ascending list. */
function firstAbove(list: readonly number[], x: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid] ?? 0) > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The layout of the new text from the previous text's (`head` and `tail`: how many leading and trailing characters
 * they share), when they differ only inside the servers list: the servers before the change and after it are kept
 * (shifted), those between read again (`removed` the old checks between, `added` the new ones). `read(from, until)`
 * gives the new text from `from` on, at least to `until` (or its end), as a string and the offset it starts at. Null
 * when the change reaches outside the list or the text between is not clean servers (the caller reads the whole text
 * then). The layout's claims are left for the caller (null).
 */
function changedLayout(
  old: Layout,
  beforeLength: number,
  afterLength: number,
  head: number,
  tail: number,
  read: (from: number, until: number) => { readonly text: string; readonly base: number },
  options: ParseOptions,
): { layout: Layout; removed: readonly ServerCheck[]; added: readonly ServerCheck[] } | null {
  const oldChangeEnd = beforeLength - tail;
  // The `[` must be in the shared head and the `]` in the shared tail: the file's other fields are unchanged.
  if (head <= old.open || oldChangeEnd > old.close) return null;
  const delta = afterLength - beforeLength;
  // Servers ending within the shared head are kept; reading starts after the last of them.
  const keep = firstAbove(old.ends, head);
  const from = keep > 0 ? (old.ends[keep - 1] ?? 0) : old.open + 1;
  // A server that starts within the shared tail starts the rest of the list, unchanged.
  let resumeAt = -1;
  const resync = (offset: number) => {
    const o = offset - delta;
    if (o < oldChangeEnd) return false;
    const k = firstAbove(old.starts, o - 1);
    if (old.starts[k] !== o) return false;
    resumeAt = k;
    return true;
  };
  // The read ends where the rest resumes: the first old server starting in the shared tail, or the list's `]`. Text
  // that does not resume there runs past `until` and is refused (null), as text the reader does not follow.
  const next = firstAbove(old.starts, oldChangeEnd - 1);
  const until = (next < old.starts.length ? (old.starts[next] ?? 0) : old.close) + delta + 1;
  const { text, base } = read(from, until);
  const got = readServers(text, from - base, keep > 0, options, (offset) => resync(offset + base));
  if (got === null) return null;
  const stop = got.stop + base;
  if (got.closed && stop - delta !== old.close) return null;
  const rest = got.closed ? old.starts.length : resumeAt;
  const shift = (list: readonly number[]) => list.slice(rest).map((x) => x + delta);
  const layout: Layout = {
    open: old.open,
    close: old.close + delta,
    starts: [...old.starts.slice(0, keep), ...got.starts.map((x) => x + base), ...shift(old.starts)],
    ends: [...old.ends.slice(0, keep), ...got.ends.map((x) => x + base), ...shift(old.ends)],
    checks: [...old.checks.slice(0, keep), ...got.checks, ...old.checks.slice(rest)],
    claims: null,
  };
  return { layout, removed: old.checks.slice(keep, rest), added: got.checks };
}
