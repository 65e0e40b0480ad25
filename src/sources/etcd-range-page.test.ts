import { describe, expect, test } from "vitest";
import { MalformedRange, readRangePage } from "./etcd-range-page.js";

/** Protobuf wire encoding, just enough to build the messages by hand. */
const varint = (n: bigint): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return out;
};
const tag = (field: number, wireType: number) => varint(BigInt(field * 8 + wireType));
const int = (field: number, n: bigint) => [...tag(field, 0), ...varint(n)];
const bytes = (field: number, b: number[] | string) => {
  const body = typeof b === "string" ? [...Buffer.from(b)] : b;
  return [...tag(field, 2), ...varint(BigInt(body.length)), ...body];
};

describe("readRangePage", () => {
  test("reads header, keys, values and more; skips fields it does not use, of every wire type", () => {
    const kv = (key: number[] | string, value: string) =>
      bytes(2, [...int(2, 5n), ...bytes(1, key), ...int(3, 9n), ...bytes(5, value), ...int(6, -1n), ...bytes(9, "x")]);
    const msg = Buffer.from([
      ...int(4, 2n),
      ...kv("/a", "1"),
      ...bytes(1, [...int(1, 2n ** 64n - 1n), ...int(3, -2n), ...int(4, 7n), ...tag(7, 1), ...Array(8).fill(1)]),
      ...kv([0x2f, 0xff], "ü".repeat(100)),
      ...tag(8, 5),
      ...[1, 2, 3, 4],
      ...int(3, 1n),
    ]);
    expect(readRangePage(msg)).toEqual({
      header: { cluster_id: "18446744073709551615", member_id: "0", revision: "-2", raft_term: "7" },
      keys: ["/a", "/\ufffd"],
      values: ["1", "ü".repeat(100)],
      lastKey: Buffer.from([0x2f, 0xff]),
      more: true,
    });
  });

  test("an empty response is no keys and no more", () => {
    expect(readRangePage(Buffer.alloc(0))).toEqual({
      header: { cluster_id: "0", member_id: "0", revision: "0", raft_term: "0" },
      keys: [],
      values: [],
      lastKey: undefined,
      more: false,
    });
  });

  test.each([
    ["a length past the end", [...tag(2, 2), 5, 1]],
    ["a varint cut short", [...tag(3, 0), 0x80]],
    ["a nested field past its message", bytes(2, [...tag(1, 2), 9])],
    ["a group (wire type 3)", [...tag(5, 3)]],
    ["a fixed64 cut short", [...tag(9, 1), 1, 2]],
  ])("%s is malformed, never a silent short page", (_, b) => {
    expect(() => readRangePage(Buffer.from(b))).toThrow(MalformedRange);
  });
});
