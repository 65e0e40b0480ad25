/**
 * The etcd endpoint sources (v3 and v2) against a real etcd: the same behaviours for both APIs.
 * Writes go through etcdctl (v2: `ETCDCTL_API=2 etcdctl set`, as the original registry was written); bursts go
 * through each API's own protocol so 500 writes take well under a second.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Etcd3 } from "etcd3";
import { freePort, startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";
import { gatedRetry, memoryLogger, run, type Running } from "../helpers/sources.js";
import type { BackendSet } from "../../src/model/backends.js";
import { etcdV3Source } from "../../src/sources/etcd-v3.js";
import { etcdV2Source } from "../../src/sources/etcd-v2.js";
import type { EtcdSourceOptions } from "../../src/sources/registry-state.js";
import type { EndpointSource } from "../../src/sources/source.js";

interface Api {
  readonly name: "v3" | "v2";
  source(o: EtcdSourceOptions): EndpointSource;
  put(etcd: EtcdServer, key: string, value: string): Promise<void>;
  del(etcd: EtcdServer, key: string): Promise<void>;
  burst(etcd: EtcdServer, entries: readonly (readonly [string, string])[]): Promise<void>;
  /** Makes the history the source would resume from unavailable (v3: compaction; v2: > 1000 newer events). */
  loseHistory(etcd: EtcdServer): Promise<void>;
}

const v3: Api = {
  name: "v3",
  source: etcdV3Source,
  put: async (etcd, k, v) => void (await etcd.ctl(["put", k, v])),
  del: async (etcd, k) => void (await etcd.ctl(["del", k])),
  burst: async (etcd, entries) => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      await Promise.all(entries.map(([k, v]) => client.put(k).value(v)));
    } finally {
      client.close();
    }
  },
  loseHistory: async (etcd) => {
    await etcd.ctl(["put", "/elsewhere/bump", "1"]);
    await etcd.compact();
  },
};

const v2Put = async (etcd: EtcdServer, k: string, v: string) => {
  const r = await fetch(`${etcd.endpoint}/v2/keys${k}`, {
    method: "PUT",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ value: v }).toString(),
  });
  if (!r.ok) throw new Error(`PUT ${k}: ${r.status}`);
};

const v2: Api = {
  name: "v2",
  source: etcdV2Source,
  put: async (etcd, k, v) => void (await etcd.ctl(["set", k, v], { api: 2 })),
  del: async (etcd, k) => void (await etcd.ctl(["rm", k], { api: 2 })),
  burst: async (etcd, entries) => {
    // Bounded concurrency: the v2 API is plain HTTP/1.1, one request per connection at a time.
    const queue = [...entries];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let e = queue.shift(); e; e = queue.shift()) await v2Put(etcd, e[0], e[1]);
      }),
    );
  },
  loseHistory: async (etcd) => {
    // etcd keeps the last 1000 v2 events; anything older answers errorCode 401 "event index cleared".
    for (let i = 0; i < 1100; i++) await v2Put(etcd, "/elsewhere/bump", String(i));
  },
};

const P = "/lb/backends";

/** Stops etcd, waits for the source to say so, starts etcd again while the source is held back from reconnecting. */
async function restartHeld(etcd: EtcdServer, src: Running<BackendSet>, gate: ReturnType<typeof gatedRetry>) {
  gate.hold();
  await etcd.stop();
  const down = await src.waitFor("disconnected", (s) => !s.connected);
  await etcd.start();
  await waitFor("source waiting to reconnect", () => gate.held());
  return down;
}
const w = (n: number) => JSON.stringify({ weight: n });

describe.each([v3, v2])("etcd $name endpoint source", (api) => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd({ v2: api.name === "v2" });
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  test("lists the prefix, reflects puts and deletes, ignores keys outside it, warns on rejected keys", async () => {
    const prefix = `${P}-list`;
    await api.put(etcd, `${prefix}/web-api/ips/10.0.0.1`, w(50));
    await api.put(etcd, `${prefix}-old/web-api/ips/10.0.0.2`, w(5)); // shares the string prefix, not the directory
    await api.put(etcd, `/lb/other/web-api/ips/10.0.0.3`, w(5));
    const { logger } = memoryLogger();
    const src = run(api.source({ etcdUrls: [etcd.endpoint], prefix, logger }));
    try {
      const first = await src.waitFor("initial list", (s) => s.connected);
      expect(first.value).toEqual({ "web-api": { "10.0.0.1": { weight: 50 } } });
      expect(first.warnings).toEqual([]);

      await api.put(etcd, `${prefix}/web-api/ips/10.0.0.4`, w(7));
      await src.waitFor("put", (s) => s.value["web-api"]?.["10.0.0.4"]?.weight === 7);
      await api.del(etcd, `${prefix}/web-api/ips/10.0.0.1`);
      const afterDel = await src.waitFor("delete", (s) => !s.value["web-api"]?.["10.0.0.1"]);
      expect(afterDel.value).toEqual({ "web-api": { "10.0.0.4": { weight: 7 } } });

      await api.put(etcd, `${prefix}/web-api/ips/not-an-ip`, w(1));
      const warned = await src.waitFor("warning", (s) => s.warnings.length > 0);
      expect(warned.warnings).toEqual([
        expect.objectContaining({ code: "registry_key_rejected", path: `${prefix}/web-api/ips/not-an-ip` }),
      ]);
      expect(warned.value).toEqual({ "web-api": { "10.0.0.4": { weight: 7 } } });
      await api.put(etcd, `${prefix}-old/web-api/ips/10.0.0.9`, w(9));
      await api.put(etcd, `${prefix}/web-api/ips/10.0.0.5`, w(1));
      const end = await src.waitFor("later put", (s) => s.value["web-api"]?.["10.0.0.5"] !== undefined);
      expect(Object.keys(end.value["web-api"] ?? {})).toEqual(["10.0.0.4", "10.0.0.5"]);
      // Whole snapshots, and only on change: no two consecutive emissions are equal.
      for (let i = 1; i < src.snapshots.length; i++) expect(src.snapshots[i]).not.toEqual(src.snapshots[i - 1]);
    } finally {
      await src.stop();
    }
  });

  test("etcd stopped and restarted: connected goes false with the last value, a change made meanwhile arrives", async () => {
    const prefix = `${P}-restart`;
    await api.put(etcd, `${prefix}/app-web/ips/10.1.0.1`, w(10));
    const gate = gatedRetry();
    const { logger, lines } = memoryLogger();
    const src = run(api.source({ etcdUrls: [etcd.endpoint], prefix, logger, retry: gate.retry }));
    try {
      await src.waitFor("initial list", (s) => s.connected && s.value["app-web"] !== undefined);
      const listedAt = api.name === "v3" ? await etcd.revision() : 0;
      const down = await restartHeld(etcd, src, gate);
      expect(down.value).toEqual({ "app-web": { "10.1.0.1": { weight: 10 } } });
      await api.put(etcd, `${prefix}/app-web/ips/10.1.0.2`, w(20));
      await api.del(etcd, `${prefix}/app-web/ips/10.1.0.1`);
      gate.release();
      const up = await src.waitFor(
        "reconnected with the change",
        (s) => s.connected && !s.value["app-web"]?.["10.1.0.1"],
      );
      expect(up.value).toEqual({ "app-web": { "10.1.0.2": { weight: 20 } } });
      // A later change still arrives: the watch resumed.
      await api.put(etcd, `${prefix}/app-web/ips/10.1.0.3`, w(30));
      await src.waitFor("watch after reconnect", (s) => s.value["app-web"]?.["10.1.0.3"]?.weight === 30);
      if (api.name === "v3") {
        // Resumed from the last revision seen, not listed again: one list, and the second watch starts right after
        // the revision the first one had reached.
        const logged = lines.map((l) => JSON.parse(l) as { msg: string; revision?: number; fromRevision?: number });
        expect(logged.filter((l) => l.msg === "listed")).toHaveLength(1);
        const watches = logged.filter((l) => l.msg === "watching").map((l) => l.fromRevision);
        expect(watches.length).toBeGreaterThanOrEqual(2);
        expect(watches[1]).toBe(listedAt + 1);
      }
    } finally {
      gate.release();
      await src.stop();
    }
  });

  test("history lost while disconnected (compaction / outdated index): a fresh list recovers", async () => {
    const prefix = `${P}-compact`;
    await api.put(etcd, `${prefix}/app-web/ips/10.2.0.1`, w(10));
    const gate = gatedRetry();
    const { logger, lines } = memoryLogger();
    const src = run(api.source({ etcdUrls: [etcd.endpoint], prefix, logger, retry: gate.retry }));
    try {
      await src.waitFor("initial list", (s) => s.connected && s.value["app-web"] !== undefined);
      await restartHeld(etcd, src, gate);
      await api.put(etcd, `${prefix}/app-web/ips/10.2.0.2`, w(20));
      await api.del(etcd, `${prefix}/app-web/ips/10.2.0.1`);
      await api.loseHistory(etcd);
      gate.release();
      const up = await src.waitFor("recovered", (s) => s.connected && !s.value["app-web"]?.["10.2.0.1"]);
      expect(up.value).toEqual({ "app-web": { "10.2.0.2": { weight: 20 } } });
      expect(lines.some((l) => l.includes("listing afresh"))).toBe(true);
      await api.put(etcd, `${prefix}/app-web/ips/10.2.0.3`, w(30));
      await src.waitFor("watch after relist", (s) => s.value["app-web"]?.["10.2.0.3"]?.weight === 30);
    } finally {
      gate.release();
      await src.stop();
    }
  });

  test("a dead endpoint listed first: the source reads through the live one", async () => {
    const prefix = `${P}-multi`;
    await api.put(etcd, `${prefix}/app-web/ips/10.4.0.1`, w(10));
    const dead = `http://127.0.0.1:${await freePort()}`;
    const { logger } = memoryLogger();
    const src = run(api.source({ etcdUrls: [dead, etcd.endpoint], prefix, logger, retry: { baseMs: 50, maxMs: 200 } }));
    try {
      const s = await src.waitFor("list", (x) => x.connected);
      expect(s.value).toEqual({ "app-web": { "10.4.0.1": { weight: 10 } } });
    } finally {
      await src.stop();
    }
  });

  test("500 puts in a burst: the final snapshot holds all 500", async () => {
    const prefix = `${P}-burst`;
    const { logger } = memoryLogger();
    const src = run(api.source({ etcdUrls: [etcd.endpoint], prefix, logger }));
    try {
      await src.waitFor("initial list", (s) => s.connected);
      const entries = Array.from(
        { length: 500 },
        (_, i) => [`${prefix}/burst-svc/ips/10.3.${i >> 8}.${i & 255}`, w(1 + (i % 100))] as const,
      );
      await api.burst(etcd, entries);
      const full = await src.waitFor("all 500", (s) => Object.keys(s.value["burst-svc"] ?? {}).length === 500);
      expect(full.value["burst-svc"]?.["10.3.1.243"]).toEqual({ weight: 1 + (499 % 100) });
    } finally {
      await src.stop();
    }
  });
});
