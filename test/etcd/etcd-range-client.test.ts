/**
 * The list's pages read from etcd's bytes (RangeEtcd3.rangePage, readRangePage) against the etcd3 client's own
 * decoding of the same requests, on a real etcd: the same header, keys, values, last key and `more`, for keys and
 * values that are not UTF-8, leased keys and values long enough for multi-byte lengths; and with auth on, a call
 * after every token was voided authenticates again as the client's own calls do.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Range } from "etcd3";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { memoryLogger } from "../helpers/sources.js";
import { RangeEtcd3 } from "../../src/sources/etcd-range-client.js";
import { bytesPages, clientPages, etcd3ClientOptions, listInto, type PageReader } from "../../src/sources/etcd-v3.js";
import { RegistryState } from "../../src/sources/registry-state.js";

const P = "/lb/range-bytes";

/** Every page of `prefix`, `limit` keys at a time, at one revision, as `read` returns them. */
async function allPages(read: PageReader, prefix: string, limit: number, revision: string) {
  const { start, end } = Range.prefix(`${prefix}/`);
  const pages = [];
  for (let from = start; pages.length < 1000;) {
    const page = await read({ start: from, end, limit, revision });
    pages.push(page);
    if (!page.more || !page.lastKey) break;
    from = Buffer.concat([page.lastKey, Buffer.from([0])]);
  }
  return pages;
}

describe("etcd v3 range pages read from their bytes", () => {
  let etcd: EtcdServer;
  let client: RangeEtcd3;
  beforeAll(async () => {
    etcd = await startEtcd();
    client = new RangeEtcd3({ hosts: etcd.endpoint });
    const lease = client.lease(600, { autoKeepAlive: false });
    await lease.grant();
    const key = (...parts: (string | Buffer)[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));
    for (let i = 0; i < 40; i++) await client.put(`${P}/app${i % 4}-web/ips/10.0.${i % 4}.${i}`).value('{"weight":2}');
    await client.put(key(`${P}/`, Buffer.from([0xff, 0xfe, 0x41]), "-web/ips/10.1.0.1")).value("{}");
    await client.put(`${P}/bad-web/ips/10.1.0.2`).value(Buffer.from([0x7b, 0xc3, 0x28, 0x80, 0x7d]));
    await client.put(`${P}/empty-web/ips/10.1.0.3`).value("");
    await client.put(`${P}/long-web/ips/10.1.0.4`).value(JSON.stringify({ weight: 7, note: "ü".repeat(300) }));
    await client.put(`${P}/näme-web/ips/10.1.0.5`).value('{"weight":1}');
    await lease.put(`${P}/leased-web/ips/10.1.0.6`).value('{"weight":3}');
    await client.put(`${P}-neighbour/app0-web/ips/10.9.9.9`).value("{}");
  });
  afterAll(async () => {
    client?.close();
    await etcd?.destroy();
  });

  test.each([1, 7, 1000])("pages of %i keys equal the client's decoding, key for key", async (limit) => {
    const revision = (await client.get("none").exec()).header.revision;
    const bytes = await allPages(bytesPages(client), P, limit, revision);
    const decoded = await allPages(clientPages(client), P, limit, revision);
    expect(bytes).toEqual(decoded);
    const keys = bytes.flatMap((p) => p.keys);
    expect(keys).toHaveLength(46);
    expect(keys).toContain(`${P}/\ufffd\ufffdA-web/ips/10.1.0.1`);
    expect(bytes.at(-1)?.more).toBe(false);
    expect(Number(bytes[0]?.header.revision)).toBe(Number(revision));
    expect(bytes[0]?.header.cluster_id).not.toBe("0");
  });

  test("a list from bytes indexes the same registry as a list through the client", async () => {
    const listed = async (read: PageReader) => {
      const emitted: unknown[] = [];
      const state = new RegistryState(P, (s) => emitted.push(s), memoryLogger().logger, [etcd.endpoint]);
      const header = await listInto(read, `${P}/`, state, 5);
      state.publish(true, "test");
      return { snapshot: emitted.at(-1), keys: [...state.keys.keys()].sort(), revision: header.revision };
    };
    const fromBytes = await listed(bytesPages(client));
    expect(fromBytes.keys).toHaveLength(46);
    expect(fromBytes).toEqual(await listed(clientPages(client)));
  });
});

describe("etcd v3 range pages from bytes with auth", () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd();
    await etcd.ctl(["put", `${P}/auth-web/ips/10.2.0.1`, '{"weight":4}']);
    await etcd.enableAuth("right-pw");
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  test("right credentials read; after every token is voided the next page authenticates again", async () => {
    const client = new RangeEtcd3(
      etcd3ClientOptions({ etcdUrls: [etcd.endpoint], auth: { username: "root", password: "right-pw" } }),
    );
    const read = bytesPages(client);
    const { start, end } = Range.prefix(`${P}/`);
    try {
      expect((await read({ start, end, limit: 10 })).keys).toEqual([`${P}/auth-web/ips/10.2.0.1`]);
      // Turning auth off and on again drops every token etcd handed out: the client's token is now invalid.
      await etcd.ctl(["auth", "disable"], { user: "root:right-pw" });
      await etcd.ctl(["auth", "enable"]);
      expect((await read({ start, end, limit: 10 })).values).toEqual(['{"weight":4}']);
    } finally {
      client.close();
    }
  });

  test("a wrong password fails the page as it fails the client's own call", async () => {
    const client = new RangeEtcd3(
      etcd3ClientOptions({ etcdUrls: [etcd.endpoint], auth: { username: "root", password: "wrong-pw" } }),
    );
    const { start, end } = Range.prefix(`${P}/`);
    try {
      const fromBytes = await bytesPages(client)({ start, end, limit: 10 }).catch((e: unknown) => e);
      const fromClient = await clientPages(client)({ start, end, limit: 10 }).catch((e: unknown) => e);
      expect(fromBytes).toBeInstanceOf(Error);
      expect((fromBytes as Error).constructor).toBe((fromClient as Error).constructor);
      expect((fromBytes as Error).message).toBe((fromClient as Error).message);
    } finally {
      client.close();
    }
  });
});
