/**
 * What the `etcd3` client's own watcher does, pinned so an upgrade that changes it is noticed: these two behaviours
 * are why src/sources/etcd-v3.ts keeps its own revision and re-creates the watch itself.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import { Etcd3, type IWatchResponse } from "etcd3";
import { startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";

let etcd: EtcdServer;
let client: Etcd3;
beforeAll(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  for (let i = 0; i < 5; i++) await client.put(`/pin/k${i}`).value("1");
});
afterAll(async () => {
  client?.close();
  await etcd?.destroy();
});

test("its resume revision passes catch-up events before they are delivered (a reconnect then would lose them)", async () => {
  const head = await etcd.revision();
  const watcher = client
    .watch()
    .prefix("/pin/")
    .startRevision(String(head - 2))
    .watcher();
  const seenAtConnect: string[] = [];
  const events: number[] = [];
  watcher.on("connected", () => seenAtConnect.push(String(watcher.lastRevision())));
  watcher.on("data", (r: IWatchResponse) => events.push(...r.events.map((e) => Number(e.kv.mod_revision))));
  try {
    await waitFor("catch-up events", () => events.length === 3);
    expect(events).toEqual([head - 2, head - 1, head]);
    // At 'connected' no event had arrived, yet the client would already resume after the newest one.
    expect(seenAtConnect).toEqual([String(head + 1)]);
  } finally {
    await watcher.cancel();
  }
});

test("a compacted start revision is a bare error: no compact revision, no re-list, the watcher is gone", async () => {
  await etcd.compact();
  const watcher = client.watch().prefix("/pin/").startRevision("2").watcher();
  const errors: Error[] = [];
  watcher.on("error", (e: Error) => errors.push(e));
  await waitFor("the watch to be cancelled", () => errors.length > 0);
  expect(errors[0]?.message).toBe("Watcher canceled: ");
  await client.put("/pin/after").value("1");
  const got: IWatchResponse[] = [];
  watcher.on("data", (r: IWatchResponse) => got.push(r));
  await new Promise((r) => setTimeout(r, 500));
  expect(got).toEqual([]);
});
