/**
 * etcd v3 gives every key a transaction or a ranged delete touches the same revision, and the watch delivers those
 * events together. The source must apply all of them, not only the first of each revision.
 */
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { clientPages, etcdV3Source, listInto } from "../../src/sources/etcd-v3.js";
import { RegistryState } from "../../src/sources/registry-state.js";
import type { BackendSet } from "../../src/model/backends.js";
import type { Snapshot } from "../../src/sources/source.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { memoryLogger, run } from "../helpers/sources.js";

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.destroy();
});

describe("etcd v3 source: several keys in one revision", () => {
  test("a ranged delete and a transaction reach the snapshot in full", async () => {
    const prefix = "/lb/revision-test";
    const key = (ip: string) => `${prefix}/app-web/ips/${ip}`;
    const src = run(etcdV3Source({ etcdUrls: [etcd.endpoint], prefix, logger: memoryLogger().logger }));
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      await src.waitFor("initial list", (s) => s.connected);
      for (const ip of ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) await client.put(key(ip)).value('{"weight":1}');
      await src.waitFor("three endpoints", (s) => Object.keys(s.value["app-web"] ?? {}).length === 3);

      await etcd.ctl(["del", "--prefix", `${prefix}/app-web/`]);
      await src.waitFor("every deleted endpoint gone", (s) => s.value["app-web"] === undefined, 5_000);

      await client
        .if(key("10.0.0.9"), "Version", "==", 0)
        .then(client.put(key("10.0.0.8")).value('{"weight":2}'), client.put(key("10.0.0.9")).value('{"weight":3}'))
        .commit();
      const both = await src.waitFor(
        "both keys of the transaction",
        (s) => s.value["app-web"]?.["10.0.0.9"] !== undefined,
      );
      expect(both.value).toEqual({ "app-web": { "10.0.0.8": { weight: 2 }, "10.0.0.9": { weight: 3 } } });
    } finally {
      client.close();
      await src.stop();
    }
  });
});

describe("etcd v3 list in pages", () => {
  test("every key under the prefix, at the first page's revision, and nothing of a neighbour prefix", async () => {
    const prefix = "/lb/page-test";
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const ips = Array.from({ length: 12 }, (_, i) => `10.0.${i % 3}.${i}`);
      for (const ip of ips) await client.put(`${prefix}/app${ip.split(".")[2]}-web/ips/${ip}`).value('{"weight":2}');
      await client.put(`${prefix}-old/app0-web/ips/10.9.9.9`).value("{}");
      await client.put(`${prefix}/bad name/ips/10.0.0.1`).value("{}");
      const emitted: Snapshot<BackendSet>[] = [];
      const { logger } = memoryLogger();
      const state = new RegistryState(prefix, (s) => emitted.push(s), logger, [etcd.endpoint]);
      const header = await listInto(clientPages(client), `${prefix}/`, state, 5);
      state.publish(true, "test");
      const set = emitted.at(-1)?.value ?? {};
      expect(Object.keys(set)).toEqual(["app0-web", "app1-web", "app2-web"]);
      expect(
        Object.values(set)
          .flatMap((eps) => Object.keys(eps))
          .sort(),
      ).toEqual([...ips].sort());
      expect(emitted.at(-1)?.warnings.map((w) => w.path)).toEqual([`${prefix}/bad name/ips/10.0.0.1`]);
      expect(state.keys.size).toBe(13);
      expect(Number(header.revision)).toBe(Number((await client.get("none").exec()).header.revision));
    } finally {
      client.close();
    }
  });
});
