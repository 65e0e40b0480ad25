/**
 * An etcd `RangeResponse` read straight from its protobuf bytes into the few things a list uses: the header, each
 * key and value as a string, the last key's bytes and the `more` flag.
 *
 * Why not the client's decoding: it builds a message object per key, then converts it again into a plain object with
 * every 64-bit field (create_revision, mod_revision, version, lease) as a decimal string and key and value as Buffers.
 * A list of 100,000 keys spent most of its CPU there, on fields a list never reads. Wire format:
 * https://protobuf.dev/programming-guides/encoding/ ; messages from etcd's rpc.proto and kv.proto (etcd3's copy).
 */

/** The response header as the etcd3 client reports it: 64-bit fields as decimal strings. */
export interface PageHeader {
  readonly cluster_id: string;
  readonly member_id: string;
  readonly revision: string;
  readonly raft_term: string;
}

export interface RangePage {
  readonly header: PageHeader;
  /** Keys and values as `Buffer#toString()` (UTF-8, invalid bytes replaced) reads them, in etcd's order. */
  readonly keys: readonly string[];
  readonly values: readonly string[];
  /** The last key's bytes (a key need not be UTF-8: the next page starts right after these bytes). */
  readonly lastKey: Buffer | undefined;
  readonly more: boolean;
}

/** A response that does not follow the wire format (never sent by etcd; a broken peer or proxy). */
export class MalformedRange extends Error {
  constructor(what: string) {
    super(`etcd's range response is malformed (${what}); listing again`);
  }
}

const VARINT = 0;
const FIXED64 = 1;
const BYTES = 2;
const FIXED32 = 5;

/** A cursor over one message's bytes. */
class Wire {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  /** A varint known to be small (tags, lengths): a number, exact up to 2^53. */
  uint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new MalformedRange("a varint runs past its message");
      const b = this.buf[this.pos++] as number;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw new MalformedRange("a varint longer than 10 bytes");
  }

  /** A 64-bit varint, whole. */
  big(): bigint {
    let value = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new MalformedRange("a varint runs past its message");
      const b = this.buf[this.pos++] as number;
      value |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asUintN(64, value);
      shift += 7n;
    }
    throw new MalformedRange("a varint longer than 10 bytes");
  }

  /** The end of a length-delimited field whose length comes next (the cursor then at its first byte). */
  span(): number {
    const length = this.uint();
    const end = this.pos + length;
    if (end > this.end) throw new MalformedRange("a field runs past its message");
    return end;
  }

  /** The length-delimited message that comes next, as its own cursor; this one moves past it. */
  message(): Wire {
    const end = this.span();
    const inner = new Wire(this.buf, this.pos, end);
    this.pos = end;
    return inner;
  }

  /** Steps over a field of this wire type (a field this reader does not use, or an unknown one). */
  skip(wireType: number): void {
    if (wireType === VARINT) this.uint();
    else if (wireType === FIXED64) this.pos += 8;
    else if (wireType === BYTES) this.pos = this.span();
    else if (wireType === FIXED32) this.pos += 4;
    else throw new MalformedRange(`wire type ${wireType}`);
    if (this.pos > this.end) throw new MalformedRange("a field runs past its message");
  }
}

/** Reads a whole `RangeResponse` message. */
export function readRangePage(buf: Buffer): RangePage {
  const header = { cluster_id: "0", member_id: "0", revision: "0", raft_term: "0" };
  const keys: string[] = [];
  const values: string[] = [];
  let lastKey: [number, number] | undefined;
  let more = false;
  const w = new Wire(buf, 0, buf.length);
  while (w.pos < w.end) {
    const tag = w.uint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1 && wireType === BYTES) readHeader(w.message(), header);
    else if (field === 2 && wireType === BYTES) {
      const [key, value] = readKeyValue(w.message());
      keys.push(buf.toString("utf8", key[0], key[1]));
      values.push(buf.toString("utf8", value[0], value[1]));
      lastKey = key;
    } else if (field === 3 && wireType === VARINT) more = w.uint() !== 0;
    else w.skip(wireType);
  }
  return {
    header,
    keys,
    values,
    // A copy: the page's buffer (megabytes) is not kept alive by the one key the next request needs.
    lastKey: lastKey && Buffer.from(buf.subarray(lastKey[0], lastKey[1])),
    more,
  };
}

/** A `ResponseHeader` into `into` (a field seen twice: the last one counts, as protobuf merges messages). */
function readHeader(w: Wire, into: { -readonly [K in keyof PageHeader]: string }): void {
  while (w.pos < w.end) {
    const tag = w.uint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (wireType !== VARINT || field < 1 || field > 4) {
      w.skip(wireType);
      continue;
    }
    const v = w.big();
    if (field === 1) into.cluster_id = v.toString();
    else if (field === 2) into.member_id = v.toString();
    // int64: a negative revision would be two's complement on the wire.
    else if (field === 3) into.revision = BigInt.asIntN(64, v).toString();
    else into.raft_term = v.toString();
  }
}

/** A `KeyValue`'s key and value as [start, end) byte offsets in the page. */
function readKeyValue(w: Wire): [[number, number], [number, number]] {
  let key: [number, number] = [w.pos, w.pos];
  let value: [number, number] = [w.pos, w.pos];
  while (w.pos < w.end) {
    const tag = w.uint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (wireType === BYTES && (field === 1 || field === 5)) {
      const end = w.span();
      const start = w.pos;
      w.pos = end;
      if (field === 1) key = [start, end];
      else value = [start, w.pos];
    } else w.skip(wireType);
  }
  return [key, value];
}
