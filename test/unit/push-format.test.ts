import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { EndpointSets } from "../../src/model/plan.js";
import { Table } from "../../src/model/table.js";
import { encodeSets, type EncodedSets } from "../../src/nginx/push-format.js";

const A = "nlb_0123456789abcdef";
const B = "nlb_fedcba9876543210_2";

/** A reading of the format as the Lua's grammar states it, to hold the encoder to it for any sets. */
function decode(text: string): { version: number; base?: number; sets: Record<string, string[]> } {
  const lines = text.split("\n");
  expect(lines.pop()).toBe(""); // every line ends in a newline, the last one included
  const head = /^nginx-lb-sets version=(0|[1-9]\d*)(?: base=(0|[1-9]\d*))?$/.exec(lines.shift() ?? "");
  expect(head).not.toBeNull();
  const end = /^end upstreams=(\d+)$/.exec(lines.pop() ?? "");
  expect(Number(end?.[1])).toBe(lines.length);
  const sets: Record<string, string[]> = {};
  for (const line of lines) {
    const m = /^(nlb_[0-9a-f]+(?:_\d+)?)=((?:[^ ;]+ [1-9]\d* (?:0|[1-9]\d*) [01];)*)$/.exec(line);
    expect(m, line).not.toBeNull();
    sets[m?.[1] ?? ""] = (m?.[2] ?? "").split(";").slice(0, -1);
  }
  return { version: Number(head?.[1]), ...(head?.[2] !== undefined ? { base: Number(head[2]) } : {}), sets };
}

describe("push format", () => {
  it("lays out a whole push: header, one upstream a line, the count", () => {
    const sets: EndpointSets = Table.of({
      [A]: [
        { ip: "10.0.0.1", port: 8080, weight: 3, backup: false },
        { ip: "fd00::2", port: 8080, weight: 0, backup: true },
      ],
      [B]: [],
    });
    expect(encodeSets(17, sets)).toBe(
      `nginx-lb-sets version=17\n${A}=10.0.0.1 8080 3 0;fd00::2 8080 0 1;\n${B}=\nend upstreams=2\n`,
    );
  });

  it("names the base version of a partial push, and encodes no upstream as a count of 0", () => {
    expect(encodeSets(9, [], 8)).toBe("nginx-lb-sets version=9 base=8\nend upstreams=0\n");
    expect(encodeSets(0, [])).toBe("nginx-lb-sets version=0\nend upstreams=0\n");
  });

  it("keeps every set and endpoint, in order, for any sets", () => {
    const endpoint = fc.record({
      ip: fc.oneof(fc.ipV4(), fc.constantFrom("::1", "fe80::1", "64:ff9b::10.0.0.1")),
      port: fc.integer({ min: 1, max: 65535 }),
      weight: fc.integer({ min: 0, max: 1000 }),
      backup: fc.boolean(),
    });
    const name = fc.stringMatching(/^nlb_[0-9a-f]{16}(_[0-9]{1,3})?$/);
    fc.assert(
      fc.property(
        fc.dictionary(name, fc.array(endpoint, { maxLength: 5 })),
        fc.nat(),
        fc.option(fc.nat(), { nil: undefined }),
        (record, version, base) => {
          const sets = Table.of(record);
          const got = decode(encodeSets(version, sets, base));
          expect(got.version).toBe(version);
          expect(got.base).toBe(base);
          expect(Object.keys(got.sets).sort()).toEqual(Object.keys(record).sort());
          for (const [n, list] of Object.entries(record))
            expect(got.sets[n]).toEqual(list.map((e) => `${e.ip} ${e.port} ${e.weight} ${e.backup ? 1 : 0}`));
          // With the encodings of earlier writes kept by list: the same text, also once some lists are new.
          const encoded: EncodedSets = new WeakMap();
          const plain = encodeSets(version, sets, base);
          expect(encodeSets(version, sets, base, [], encoded)).toBe(plain);
          expect(encodeSets(version, sets, base, [], encoded)).toBe(plain);
          const half = [...sets].map(([n, list], i) => [n, i % 2 ? [...list] : list] as const);
          expect(encodeSets(version, half, base, [], encoded)).toBe(plain);
        },
      ),
      { numRuns: 200 },
    );
  });
});
