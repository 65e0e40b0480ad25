/**
 * The push's guard against a concurrent writer, on a real etcd, with the other writer placed exactly between the
 * push's read and its write: a key created, changed or deleted under the prefix after the read fails the push, also
 * a key the push leaves as it is (no compare can see a deleted key: the push counts the prefix).
 */
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { applyMessage, applyOps, readTable } from "../../src/sources/services-write.js";
import { planPush, pushTxns } from "../../src/model/table-push.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";

let etcd: EtcdServer;
let client: Etcd3;
beforeAll(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
});
afterAll(async () => {
  client?.close();
  await etcd?.destroy();
});

const value = (domain: string, app: string) =>
  JSON.stringify({ domain_name: domain, frontend_port: 80, routes: { "/": { app, service: "web" } } });
const table = async (prefix: string) =>
  Object.fromEntries((await readTable(client, prefix)).keys.map((k) => [k.key.slice(prefix.length + 1), k.value]));

/** Fills the prefix with `n` servers s0..s(n-1) (app one); returns the desired map: the same with `change` applied. */
async function seed(prefix: string, n: number): Promise<Map<string, string>> {
  const desired = new Map<string, string>();
  for (let i = 0; i < n; i += 100)
    await client.kv.txn({
      compare: [],
      success: Array.from({ length: Math.min(100, n - i) }, (_, j) => ({
        request_put: {
          key: Buffer.from(`${prefix}/s${i + j}.test:80`),
          value: Buffer.from(value(`s${i + j}.test`, "one")),
        },
      })),
      failure: [],
    });
  for (let i = 0; i < n; i++) desired.set(`${prefix}/s${i}.test:80`, value(`s${i}.test`, "one"));
  return desired;
}

/** Reads, lets `other` write, then applies the push planned from the read: 0 or 1 (as the CLI exits) and its words. */
async function pushAround(prefix: string, desired: Map<string, string>, other: () => Promise<unknown>) {
  const read = await readTable(client, prefix);
  const plan = planPush(read.keys, desired);
  await other();
  const r = await applyOps(client, prefix, pushTxns(plan, read.keys.length), read.revision);
  return { code: r.ok ? 0 : 1, said: applyMessage(prefix, r, "run it again") };
}

describe("services push guard", () => {
  test("a concurrent delete of a key the push keeps fails a small push with nothing written", async () => {
    const p = "/guard1/services";
    const desired = await seed(p, 3);
    desired.set(`${p}/s1.test:80`, value("s1.test", "two"));
    desired.set(`${p}/new.test:80`, value("new.test", "two"));
    const r = await pushAround(p, desired, () => client.delete().key(`${p}/s0.test:80`).exec());
    expect(r.code).toBe(1);
    expect(r.said).toMatch(
      /conflict: the table under \/guard1\/services changed after revision \d+ .*nothing was written/,
    );
    expect(await table(p)).toEqual({ "s1.test:80": value("s1.test", "one"), "s2.test:80": value("s2.test", "one") });
  });

  test("without the other writer the same push applies (the guard is not always false)", async () => {
    const p = "/guard2/services";
    const desired = await seed(p, 3);
    desired.set(`${p}/s1.test:80`, value("s1.test", "two"));
    const r = await pushAround(p, desired, async () => undefined);
    expect([r.code, r.said]).toEqual([0, expect.stringMatching(/applied 1 write\(s\) in 1 transaction\(s\)/)]);
    expect((await table(p))["s1.test:80"]).toBe(value("s1.test", "two"));
  });

  test("a concurrent create of a key the file does not name fails the push", async () => {
    const p = "/guard3/services";
    const desired = await seed(p, 2);
    desired.set(`${p}/s1.test:80`, value("s1.test", "two"));
    const r = await pushAround(p, desired, () =>
      client.put(`${p}/other.test:80`).value(value("other.test", "x")).exec(),
    );
    expect([r.code, r.said]).toEqual([1, expect.stringMatching(/conflict: .*nothing was written/)]);
    expect((await table(p))["s1.test:80"]).toBe(value("s1.test", "one"));
  });

  test("a concurrent delete of a kept key in a table too large to hold every key: the push stops and says so", async () => {
    const p = "/guard4/services";
    const desired = await seed(p, 300);
    desired.set(`${p}/s7.test:80`, value("s7.test", "two"));
    const r = await pushAround(p, desired, () => client.delete().key(`${p}/s250.test:80`).exec());
    expect(r.code).toBe(1);
    expect(r.said).toMatch(
      /conflict: another writer deleted 1 server\(s\) under \/guard4\/services that this write keeps, before etcd revision \d+: 1 of 1 writes .*does not equal what was written/,
    );
    expect(Object.keys(await table(p))).toHaveLength(299);
  });
});
