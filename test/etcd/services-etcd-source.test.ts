/**
 * The routing source over a real etcd: list, watch, a bad key isolated (its last valid version kept), conflicts by
 * create revision, a relist after compaction, and the saved table served when etcd is down at start.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { Services } from "../../src/model/services.js";
import { EtcdServicesSource, type RoutesReport } from "../../src/sources/services-etcd.js";
import { TableStore } from "../../src/state/store.js";
import { startEtcd, type EtcdServer } from "../helpers/etcd.js";
import { gatedRetry, memoryLogger, run } from "../helpers/sources.js";

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.destroy();
});

const server = (domain: string, port: number, app = "a") =>
  JSON.stringify({ domain_name: domain, frontend_port: port, routes: { "/": { app, service: "web" } } });
const names = (s: Services) => s.servers.map((x) => `${x.domain}:${x.port}:${x.routes[0]?.primary.app}`);

async function source(prefix: string, dir: string, retry = gatedRetry().retry) {
  const reports: RoutesReport[] = [];
  const { logger, lines } = memoryLogger();
  const src = new EtcdServicesSource({
    etcdUrls: [etcd.endpoint],
    prefix,
    logger,
    store: new TableStore(dir),
    report: (r) => void reports.push(r),
    retry,
  });
  return { running: run<Services>(src), reports, lines };
}

describe("routing table from etcd", () => {
  test("keys list and watch; a bad key keeps its last valid version; conflicts go to the older key", async () => {
    const p = "/t1/services";
    const dir = await mkdtemp(join(tmpdir(), "nginx-lb-routes-"));
    await etcd.ctl(["put", `${p}/a.test:80`, server("a.test", 80)]);
    const { running, reports } = await source(p, dir);
    try {
      await running.waitFor("first list", (s) => s.connected && names(s.value).join() === "a.test:80:a");
      await etcd.ctl(["put", `${p}/b.test:80`, server("b.test", 80)]);
      await running.waitFor("b added", (s) => names(s.value).join() === "a.test:80:a,b.test:80:a");
      await etcd.ctl(["put", `${p}/a.test:80`, "{ not json"]);
      await etcd.ctl(["put", `${p}/b.test:80`, server("b.test", 80, "b2")]);
      await running.waitFor(
        "b changes while a keeps its version",
        (s) => names(s.value).join() === "a.test:80:a,b.test:80:b2",
      );
      expect(reports.at(-1)?.rejected.map((r) => [r.key, r.keptLastValid])).toEqual([[`${p}/a.test:80`, true]]);
      // A newer key claiming b.test:80 again through its TLS port... plain port 8080 used as TLS: conflicts with c's plain.
      await etcd.ctl(["put", `${p}/c.test:8080`, server("c.test", 8080)]);
      await etcd.ctl([
        "put",
        `${p}/d.test:80`,
        JSON.stringify({
          domain_name: "d.test",
          routes: { "/": { app: "d", service: "web" } },
          ssl_port: 8080,
          ssl_certificate: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
          ssl_certificate_key: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
        }),
      ]);
      await running.waitFor("c in", (s) => names(s.value).includes("c.test:8080:a"));
      await expect.poll(() => reports.at(-1)?.rejected.map((r) => r.key)).toEqual([`${p}/a.test:80`, `${p}/d.test:80`]);
      expect(names(running.last()!.value)).not.toContain("d.test:80:d");
      await running.stop();
      const saved = await new TableStore(dir).load(p);
      expect(saved.table?.entries.length).toBe(4);
    } finally {
      await running.stop();
    }
  });

  test("etcd down at start: the saved table serves, marked disconnected; etcd back: the live table", async () => {
    const p = "/t2/services";
    const dir = await mkdtemp(join(tmpdir(), "nginx-lb-routes-"));
    await etcd.ctl(["put", `${p}/a.test:80`, server("a.test", 80)]);
    const first = await source(p, dir);
    await first.running.waitFor("listed", (s) => s.connected && s.value.servers.length === 1);
    await first.running.stop();
    await etcd.stop();
    const gate = gatedRetry();
    const second = await source(p, dir, gate.retry);
    try {
      const s = await second.running.waitFor("saved table", (x) => !x.connected);
      expect(names(s.value)).toEqual(["a.test:80:a"]);
      expect(s.origin).toMatch(/state dir/);
      await etcd.start();
      await etcd.ctl(["put", `${p}/b.test:80`, server("b.test", 80)]);
      await second.running.waitFor("live", (x) => x.connected && x.value.servers.length === 2, 30_000);
    } finally {
      await second.running.stop();
    }
  });

  test("a watch from a compacted revision relists", async () => {
    const p = "/t3/services";
    const dir = await mkdtemp(join(tmpdir(), "nginx-lb-routes-"));
    const gate = gatedRetry();
    const { running, lines } = await source(p, dir, gate.retry);
    try {
      await running.waitFor("empty list", (s) => s.connected);
      // Break the watch while etcd compacts past it: the resume revision is gone.
      gate.hold();
      await etcd.stop();
      await etcd.start();
      await etcd.ctl(["put", `${p}/a.test:80`, server("a.test", 80)]);
      await etcd.ctl(["put", `${p}/a.test:80`, server("a.test", 80, "z")]);
      await etcd.compact();
      gate.release();
      await running.waitFor("relisted", (s) => s.connected && names(s.value).join() === "a.test:80:z", 30_000);
      expect(lines.join("\n")).toMatch(/cancelled the routes watch \(compacted\?\); listing afresh/);
    } finally {
      await running.stop();
    }
  });
});
