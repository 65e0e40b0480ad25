/**
 * Literal IP addresses, parsed by hand because model/ stays free of node:* (it also runs in the browser-free
 * renderer tests). Only the canonical spellings nginx accepts in `server` lines: no zones, no ports, no names.
 */

const DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
// One pattern for the whole address: a registry list checks 100,000 of them, and a split per address costs more
// than the match.
const IPV4 = new RegExp(`^${DEC_OCTET}(?:\\.${DEC_OCTET}){3}$`);

/** True for a dotted-quad IPv4 address without leading zeros. */
export function isIPv4(text: string): boolean {
  return IPV4.test(text);
}

const HEXTET = /^[0-9A-Fa-f]{1,4}$/;

/** True for an RFC 4291 IPv6 address (with an optional trailing dotted quad), zone ids excluded. */
export function isIPv6(text: string): boolean {
  if (text.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(text)) return false;
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = (s: string): string[] | null => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0] ?? "");
  const tail = halves.length === 2 ? groups(halves[1] ?? "") : [];
  if (head === null || tail === null) return false;
  const all = [...head, ...tail];
  // A dotted quad may only be the last group of the text: `1.2.3.4::` has it last in `all` but not in the text.
  const quadAt = halves.length === 2 && tail.length === 0 ? -1 : all.length - 1;
  let count = 0;
  for (let i = 0; i < all.length; i++) {
    const g = all[i] ?? "";
    if (i === quadAt && g.includes(".")) {
      if (!isIPv4(g)) return false;
      count += 2;
    } else if (HEXTET.test(g)) count += 1;
    else return false;
  }
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** The ip family of a literal address, or null when it is not one. */
export function ipFamily(text: string): 4 | 6 | null {
  if (isIPv4(text)) return 4;
  if (isIPv6(text)) return 6;
  return null;
}

/** The 8 groups of a valid IPv6 address (a trailing dotted quad becomes the last two). */
function ipv6Groups(text: string): number[] {
  const expand = (s: string): number[] =>
    s === ""
      ? []
      : s.split(":").flatMap((g) => {
          if (!g.includes(".")) return [parseInt(g, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = g.split(".").map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = "", tail] = text.split("::");
  const h = expand(head);
  if (tail === undefined) return h;
  const t = expand(tail);
  return [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * The one spelling of an address (RFC 5952 for IPv6: lower case, no leading zeros, the longest run of zero groups as
 * `::`; IPv4-mapped as `::ffff:a.b.c.d`), so two spellings of one endpoint are one endpoint, not double its weight.
 * Null when the text is not an address.
 */
export function canonicalIp(text: string): string | null {
  const family = ipFamily(text);
  if (family === 4) return text;
  if (family === null) return null;
  const g = ipv6Groups(text);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    const [hi = 0, lo = 0] = g.slice(6);
    return `::ffff:${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best.at < 0) return hex.join(":");
  return `${hex.slice(0, best.at).join(":")}::${hex.slice(best.at + best.len).join(":")}`;
}
