import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { backendSetFromKeys, DEFAULT_PREFIX, parseBackendsFile } from "../../src/model/backends.js";
import type { Problem } from "../../src/model/problem.js";

/**
 * The backends file reads each endpoint in place; the rules are the registry's. The reference here is the file read
 * the registry's way: every endpoint made into its key and value and read by backendSetFromKeys.
 */
function asKeys(raw: Record<string, Record<string, unknown>>) {
  const entries: [string, string][] = [];
  for (const [name, eps] of Object.entries(raw))
    for (const [ip, ep] of Object.entries(eps))
      entries.push([`${DEFAULT_PREFIX}/${name}/ips/${ip}`, JSON.stringify(ep)]);
  const { set, warnings } = backendSetFromKeys(entries);
  const byKey = new Map(entries.map(([key], i) => [key, i]));
  const pathOf = (key: string) => {
    const i = byKey.get(key) ?? -1;
    const [name = "", ip = ""] =
      Object.entries(raw).flatMap(([n, eps]) => Object.keys(eps).map((a) => [n, a]))[i] ?? [];
    return `[${JSON.stringify(name)}][${JSON.stringify(ip)}]`;
  };
  const problems = (code: string) =>
    warnings.filter((w) => w.code === code).map((w) => ({ ...w, path: pathOf(w.path) }));
  return { set, errors: problems("registry_key_rejected"), warnings: problems("registry_value") };
}

const sorted = (ps: readonly Problem[]) => ps.map((p) => `${p.code} ${p.path}: ${p.message}`).sort();

describe("the backends file", () => {
  const name = fc.constantFrom("web-front", "a-b", "a/b", "", "__proto__", "constructor", "web front", "x.y_z-1");
  const ip = fc.constantFrom("10.0.0.1", "10.0.0.2", "::1", "0:0::1", "010.0.0.1", "1.2.3.4:80", "a/b", "", "host");
  const value = fc.oneof(
    fc.record({ weight: fc.oneof(fc.integer({ min: -2, max: 1002 }), fc.constant(1.5), fc.string()) }),
    fc.constant({}),
    fc.constant(null),
    fc.constant([1]),
    fc.constant("w"),
    fc.constant(7),
  );
  const file = fc.dictionary(name, fc.dictionary(ip, value, { maxKeys: 4 }), { maxKeys: 5 });

  it("reads every endpoint as its registry key would be read: the same set, errors and warnings", () => {
    fc.assert(
      fc.property(file, (raw) => {
        const want = asKeys(raw);
        const got = parseBackendsFile(raw);
        expect(sorted(got.warnings)).toEqual(sorted(want.warnings));
        if (got.ok) {
          expect(want.errors).toEqual([]);
          expect(JSON.stringify(got.value)).toBe(JSON.stringify(want.set));
        } else expect(sorted(got.errors)).toEqual(sorted(want.errors));
      }),
      { numRuns: 300 },
    );
  });

  it("an address or name with a '/' is refused as no registry key, naming its JSON path", () => {
    const r = parseBackendsFile({ "a/b": { "10.0.0.1": { weight: 1 } }, "a-b": { "10.0.0.1/8": { weight: 1 } } });
    expect(r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      '["a/b"]["10.0.0.1"]: key is not of the form /lb/backends/<app>-<service>/ips/<ip>',
      '["a-b"]["10.0.0.1/8"]: key is not of the form /lb/backends/<app>-<service>/ips/<ip>',
    ]);
  });
});
