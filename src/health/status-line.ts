/**
 * The status line of an HTTP/1.x answer, all an http probe reads of it: the code, once the line has arrived whole.
 * Pure, so a line split across TCP chunks is the caller's concatenation and nothing else.
 */
export type StatusLine =
  | { readonly kind: "status"; readonly status: number }
  /** No line end yet and still short enough to be a status line: read more. */
  | { readonly kind: "incomplete" }
  /** Not an HTTP/1.x status line (another protocol, garbage, or too long to be one). */
  | { readonly kind: "invalid" };

/** Longer than any status line a health endpoint sends (`HTTP/1.1 200 OK` plus a generous reason phrase). */
export const STATUS_LINE_MAX = 512;

const STATUS_RE = /^HTTP\/1\.[01] ([1-5][0-9]{2})(?: [^\r\n]*)?\r?$/;
/** A prefix that could still become a status line: reject other protocols at their first bytes. */
const PREFIX = "HTTP/1.";

/** Reads the status line at the start of `head` (latin1 text of the bytes received so far). */
export function statusLine(head: string): StatusLine {
  const end = head.indexOf("\n");
  if (end < 0) {
    const start = head.slice(0, PREFIX.length);
    if (!PREFIX.startsWith(start) || head.length > STATUS_LINE_MAX) return { kind: "invalid" };
    return { kind: "incomplete" };
  }
  const m = end <= STATUS_LINE_MAX ? STATUS_RE.exec(head.slice(0, end)) : null;
  return m ? { kind: "status", status: Number(m[1]) } : { kind: "invalid" };
}
