/**
 * FNV-1a 64-bit as 16 hex digits: a pure, dependency-free hash for names and generations (not for security). A list
 * hashes as its concatenation, so a large text can be hashed in the pieces it is built from without joining it first.
 * It departs from FNV-1a in two ways that stay, because upstream names and generations must not change between
 * versions: a UTF-16 code unit's high byte goes into the high half, and when the low half has its top bit set the
 * multiply's carry into the high half is 0x1b3 less (the low half is read as negative). hash.test.ts states it exactly.
 */
export function fnv1a64(text: string | readonly string[]): string {
  let hi = 0xcbf29ce4 >>> 0;
  let lo = 0x84222325 >>> 0;
  for (const part of typeof text === "string" ? [text] : text) {
    for (let i = 0; i < part.length; i++) {
      const c = part.charCodeAt(i);
      lo ^= c & 0xff;
      if (c > 0xff) hi ^= c >>> 8;
      // Multiply (hi,lo) by the FNV prime 0x100000001b3 = 2^40 + 0x1b3, in 32-bit halves.
      const loMul = lo * 0x1b3;
      const carry = Math.floor(loMul / 0x100000000);
      const newLo = loMul >>> 0;
      const newHi = (hi * 0x1b3 + carry + ((lo << 8) >>> 0)) >>> 0;
      hi = newHi;
      lo = newLo;
    }
  }
  return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
}
