/**
 * `list` in the order `Array.prototype.sort` gives strings (by UTF-16 code units), sorted in place only when it is not
 * in that order already. The registry's records are built with their addresses in order, and the default sort is
 * the costly part of walking 100,000 of them when nothing needs to move.
 */
export function sortStrings(list: string[]): string[] {
  for (let i = 1; i < list.length; i++) if ((list[i - 1] as string) > (list[i] as string)) return list.sort();
  return list;
}
