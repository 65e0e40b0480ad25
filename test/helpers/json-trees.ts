/** JSON texts whose objects may repeat keys, for property tests of the readers that must notice (a JS object could not hold them). */
import fc from "fast-check";

/** A JSON value written as entry lists, so keys can repeat. */
export type Tree = number | string | { arr: Tree[] } | { obj: [string, Tree][] };

/** Keys as written in the text: two of them spell the same key ("a" and "\u0061"), one is `__proto__`. */
const KEYS = ["a", "b", "\\u0061", "__proto__", "a b", "é"];

export const { tree } = fc.letrec<{ tree: Tree }>((t) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer(),
    fc.string(),
    fc.record({ arr: fc.array(t("tree"), { maxLength: 4 }) }),
    fc.record({ obj: fc.array(fc.tuple(fc.constantFrom(...KEYS), t("tree")), { maxLength: 4 }) }),
  ),
}));

/** Whitespace JSON allows between tokens. */
export const ws = fc.constantFrom("", " ", "\n", "\r\n\t ");

/** The tree's text, with `space` between every two tokens. */
export const write = (t: Tree, space: string): string =>
  typeof t === "number" || typeof t === "string"
    ? JSON.stringify(t)
    : "arr" in t
      ? `[${space}${t.arr.map((x) => write(x, space)).join(`,${space}`)}${space}]`
      : `{${space}${t.obj.map(([k, v]) => `"${k}"${space}:${space}${write(v, space)}`).join(`,${space}`)}${space}}`;
