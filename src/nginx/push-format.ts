import type { PushedEndpoint } from "../model/plan.js";

/**
 * The text an endpoint push carries, and the start-up sets file holds: the shared dict's own line format, so the Lua
 * (src/nginx/lua/nginx_lb_sets.lua, which documents the grammar and checks every line) stores each set as it came.
 * The values were validated on their way in (model/), so this only lays them out:
 *
 *   nginx-lb-sets version=<v>[ base=<b>]
 *   <upstream>=<ip> <port> <weight> <0|1>;...
 *   end upstreams=<n>
 */
export const PUSH_CONTENT_TYPE = "text/plain; charset=utf-8";

/**
 * Each set's encoded value by its list: sets of unchanged routes are the same arrays from one target to the next, so a
 * caller that writes every set after every push (the start-up file) keeps one of these and encodes only new lists.
 */
export type EncodedSets = WeakMap<readonly PushedEndpoint[], string>;

/**
 * Encodes `sets` at `version`; with `base`, a partial push that nginx applies only when it holds version `base`, in
 * which each of `removed` is a line without `=` (nginx forgets that upstream's set).
 */
export function encodeSets(
  version: number,
  sets: Iterable<readonly [string, readonly PushedEndpoint[]]>,
  base?: number,
  removed: readonly string[] = [],
  encoded?: EncodedSets,
): string {
  return [...setsText(version, sets, base, removed, encoded)].join("");
}

/** `encodeSets` line by line (each with its newline), for a writer that never holds the whole text at once. */
export function* setsText(
  version: number,
  sets: Iterable<readonly [string, readonly PushedEndpoint[]]>,
  base?: number,
  removed: readonly string[] = [],
  encoded?: EncodedSets,
): Generator<string> {
  yield base === undefined ? `nginx-lb-sets version=${version}\n` : `nginx-lb-sets version=${version} base=${base}\n`;
  let count = 0;
  for (const [name, list] of sets) {
    let value = encoded?.get(list);
    if (value === undefined) {
      // Joined, not appended: `+=` leaves a tree of a few dozen string pieces per set, which `encoded` keeps alive.
      const parts: (string | number)[] = [];
      for (const e of list) parts.push(e.ip, " ", e.port, " ", e.weight, e.backup ? " 1;" : " 0;");
      value = parts.join("");
      encoded?.set(list, value);
    }
    yield `${name}=${value}\n`;
    count++;
  }
  if (base !== undefined)
    for (const name of removed) {
      yield `${name}\n`;
      count++;
    }
  yield `end upstreams=${count}\n`;
}
