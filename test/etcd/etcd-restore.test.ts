/**
 * An etcd restored from an older snapshot, or wiped and rebuilt, at the same URL while a source follows it: the source
 * notices the other history (revision or index gone back, raft term gone back, or another cluster id) and lists
 * afresh, so it emits exactly what the restored etcd holds and follows the writes made after it (v3 and v2 API).
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { gatedRetry, memoryLogger, run } from "../helpers/sources.js";
import { etcdV3Source } from "../../src/sources/etcd-v3.js";
import { etcdV2Source } from "../../src/sources/etcd-v2.js";

const w = (n: number) => JSON.stringify({ weight: n });
const ips = (s: { value: Record<string, Record<string, unknown>> }, app = "web-api") =>
  Object.keys(s.value[app] ?? {}).sort();

describe.each(["v3", "v2"] as const)("etcd %s source: restored or rebuilt etcd at the same URL", (api) => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd({ v2: true });
  });
  afterAll(async () => {
    await etcd?.destroy();
  });
  const put = (k: string, v: string) => (api === "v3" ? etcd.ctl(["put", k, v]) : etcd.ctl(["set", k, v], { api: 2 }));
  const del = (k: string) => (api === "v3" ? etcd.ctl(["del", k]) : etcd.ctl(["rm", k], { api: 2 }));
  const source = api === "v3" ? etcdV3Source : etcdV2Source;

  test("restored from an older snapshot: the restored set is emitted, later writes follow", async () => {
    const p = `/restore-${api}`;
    await put(`${p}/web-api/ips/10.0.0.1`, w(1));
    await put(`${p}/web-api/ips/10.0.0.2`, w(1));
    const snap = await etcd.snapshot();
    const { logger, lines } = memoryLogger();
    const src = run(source({ etcdUrls: [etcd.endpoint], prefix: p, logger, retry: { baseMs: 50, maxMs: 400 } }));
    try {
      await src.waitFor("initial list", (s) => s.connected && ips(s).length === 2);
      // After the snapshot: one endpoint added, one deleted (and more writes, so the revision is well past it).
      await put(`${p}/web-api/ips/10.0.0.3`, w(1));
      await del(`${p}/web-api/ips/10.0.0.1`);
      for (let i = 0; i < 5; i++) await put(`/elsewhere/${api}/bump`, String(i));
      await src.waitFor("changes after the snapshot", (s) => ips(s).join() === "10.0.0.2,10.0.0.3");

      await etcd.restore(snap);
      // A v3 snapshot holds the v3 keyspace only: over v2 the restored registry is empty.
      const restored = api === "v3" ? "10.0.0.1,10.0.0.2" : "";
      await src.waitFor("the restored set", (s) => s.connected && ips(s).join() === restored);
      expect(lines.some((l) => /went back from/.test(l) && /listing afresh/.test(l))).toBe(true);

      await put(`${p}/web-api/ips/10.0.0.4`, w(1));
      if (api === "v3") await del(`${p}/web-api/ips/10.0.0.2`);
      const expected = api === "v3" ? "10.0.0.1,10.0.0.4" : "10.0.0.4";
      await src.waitFor("writes after the restore", (s) => s.connected && ips(s).join() === expected);
    } finally {
      await src.stop();
    }
  });

  test("wiped and rebuilt as another cluster, its revision already past ours: the cluster id triggers the relist", async () => {
    const p = `/rebuild-${api}`;
    await put(`${p}/web-api/ips/10.1.0.1`, w(1));
    const gate = gatedRetry();
    const { logger, lines } = memoryLogger();
    const src = run(source({ etcdUrls: [etcd.endpoint], prefix: p, logger, retry: gate.retry }));
    try {
      await src.waitFor("initial list", (s) => s.connected && ips(s).join() === "10.1.0.1");
      const before = await etcd.clusterId();
      gate.hold();
      await etcd.rebuild({ newCluster: true });
      expect(await etcd.clusterId()).not.toBe(before);
      await src.waitFor("disconnected", (s) => !s.connected);
      // Enough writes that the new cluster's revision (v2: index) passes the one the source had reached: only the
      // cluster id tells the histories apart.
      for (let i = 0; i < 40; i++) await put(`/elsewhere/${api}/fill`, String(i));
      await put(`${p}/web-api/ips/10.1.0.2`, w(1));
      gate.release();
      await src.waitFor("the rebuilt registry", (s) => s.connected && ips(s).join() === "10.1.0.2");
      expect(lines.some((l) => /cluster id changed from/.test(l))).toBe(true);
      await put(`${p}/web-api/ips/10.1.0.3`, w(1));
      await src.waitFor("a write after the rebuild", (s) => ips(s).join() === "10.1.0.2,10.1.0.3");
    } finally {
      gate.release();
      await src.stop();
    }
  });

  test("wiped and rebuilt with the same flags (same cluster id): the revision gone back triggers the relist", async () => {
    const p = `/wipe-${api}`;
    for (let i = 0; i < 10; i++) await put(`/elsewhere/${api}/pre`, String(i));
    await put(`${p}/web-api/ips/10.2.0.1`, w(1));
    const { logger, lines } = memoryLogger();
    const src = run(source({ etcdUrls: [etcd.endpoint], prefix: p, logger, retry: { baseMs: 50, maxMs: 400 } }));
    try {
      await src.waitFor("initial list", (s) => s.connected && ips(s).join() === "10.2.0.1");
      await etcd.rebuild();
      await src.waitFor("the empty registry", (s) => s.connected && ips(s).length === 0);
      expect(lines.some((l) => /went back from/.test(l))).toBe(true);
      await put(`${p}/web-api/ips/10.2.0.2`, w(1));
      await src.waitFor("a write after the rebuild", (s) => s.connected && ips(s).join() === "10.2.0.2");
    } finally {
      await src.stop();
    }
  });
});
