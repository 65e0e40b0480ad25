/**
 * Literal IP addresses, parsed by hand because model/ stays free of node:* (it also runs in the browser-free
 * renderer tests). Only the canonical spellings nginx accepts in `server` lines: no zones, no ports, no names.
 */

const DEC_OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$/;

/** True for a dotted-quad IPv4 address without leading zeros. */
export function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => DEC_OCTET.test(p));
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
