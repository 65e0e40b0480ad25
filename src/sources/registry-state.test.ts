import { describe, expect, test } from "vitest";
import pino from "pino";
import { RegistryState, advanceMark, backoffDelay, compareCluster, untilAborted } from "./registry-state.js";
import type { Snapshot } from "./source.js";
import type { BackendSet } from "../model/backends.js";

describe("backoffDelay", () => {
  const o = { baseMs: 100, maxMs: 2_000 };
  test("doubles per attempt up to the cap, half fixed and half jitter", () => {
    expect([0, 1, 2, 3, 4, 5, 40].map((a) => backoffDelay(a, { ...o, random: () => 0 }))).toEqual([
      50, 100, 200, 400, 800, 1_000, 1_000,
    ]);
    expect([0, 1, 5, 40].map((a) => backoffDelay(a, { ...o, random: () => 0.999999 }))).toEqual([
      100, 200, 2_000, 2_000,
    ]);
  });
});

test("untilAborted settles for an abort before the call as well as after it", async () => {
  const before = new AbortController();
  before.abort();
  const after = new AbortController();
  const settled = Promise.all([untilAborted(before.signal), untilAborted(after.signal)]);
  after.abort();
  await expect(settled).resolves.toEqual([undefined, undefined]);
});

describe("RegistryState", () => {
  const make = () => {
    const emitted: Snapshot<BackendSet>[] = [];
    const state = new RegistryState("/lb/backends", (s) => void emitted.push(s), pino({ level: "silent" }), []);
    return { state, emitted };
  };

  test("nothing is emitted while disconnected before the first list: no value is known yet", () => {
    const { state, emitted } = make();
    state.unreachable("http://127.0.0.1:2379", "refused the connection", 200);
    expect(emitted).toEqual([]);
  });

  test("emits whole sets, only when the set, its warnings or the connected flag change", () => {
    const { state, emitted } = make();
    state.replace([["/lb/backends/a-b/ips/10.0.0.1", '{"weight":5}']]);
    state.publish(true, "etcd revision 1");
    state.publish(true, "etcd revision 2");
    state.keys.set("/lb/backends/a-b/ips/10.0.0.1", '{"weight":5}');
    state.publish(true, "etcd revision 3");
    expect(emitted).toHaveLength(1);
    state.unreachable("http://127.0.0.1:2379", "refused the connection", 200);
    expect(emitted).toHaveLength(2);
    expect(emitted[1]).toMatchObject({ connected: false, value: { "a-b": { "10.0.0.1": { weight: 5 } } } });
    state.keys.set("/lb/backends/a-b/ips/bad", "{}");
    state.publish(true, "etcd revision 4");
    expect(emitted[2]?.warnings).toEqual([expect.objectContaining({ path: "/lb/backends/a-b/ips/bad" })]);
  });
});

test("a relist that finds nothing emits the empty set, not the last one (etcd rebuilt empty)", () => {
  const emitted: Snapshot<BackendSet>[] = [];
  const state = new RegistryState("/lb/backends", (s) => void emitted.push(s), pino({ level: "silent" }), []);
  state.replace([["/lb/backends/a-b/ips/10.0.0.1", '{"weight":5}']]);
  state.publish(true, "etcd revision 7");
  state.replace([]);
  state.publish(true, "etcd revision 1");
  expect(emitted.map((s) => s.value)).toEqual([{ "a-b": { "10.0.0.1": { weight: 5 } } }, {}]);
});

describe("compareCluster", () => {
  const m = (clusterId: string, revision: number, raftTerm = 2) => ({ clusterId, revision, raftTerm });
  test("nothing seen yet: continue", () => expect(compareCluster(undefined, m("a", 1))).toEqual({ kind: "continue" }));
  test("same cluster, revision forward: continue", () =>
    expect(compareCluster(m("a", 10), m("a", 12, 3))).toEqual({ kind: "continue" }));
  test("same cluster, same revision (a restart with no writes): continue", () =>
    expect(compareCluster(m("a", 10, 2), m("a", 10, 3)).kind).toBe("continue"));
  test("revision went backwards: relist, naming both revisions", () =>
    expect(compareCluster(m("a", 20), m("a", 12))).toEqual({
      kind: "relist",
      reason: "revision went back from 20 to 12 (etcd restored from an older snapshot or rebuilt)",
    }));
  test("cluster id changed, even with a higher revision: relist", () =>
    expect(compareCluster(m("a", 5), m("b", 50))).toMatchObject({
      kind: "relist",
      reason: expect.stringMatching(/cluster id changed from a to b/),
    }));
  test("raft term went backwards at the same revision: relist", () =>
    expect(compareCluster(m("a", 5, 7), m("a", 5, 2))).toMatchObject({
      kind: "relist",
      reason: expect.stringMatching(/raft term went back from 7 to 2/),
    }));
  test("unknown id or term (empty, 0) never triggers a relist", () =>
    expect(compareCluster(m("", 5, 0), m("b", 6, 1)).kind).toBe("continue"));
  test("advanceMark keeps the highest revision and term seen", () =>
    expect(advanceMark(m("a", 9, 3), m("a", 7, 2))).toEqual(m("a", 9, 3)));
});

describe("RegistryState.unreachable", () => {
  test("logs each failure once per outage, in operator words with the retry delay", () => {
    const lines: string[] = [];
    const state = new RegistryState(
      "/lb/backends",
      () => undefined,
      pino({ level: "info" }, { write: (s: string) => void lines.push(s) }),
      ["http://e:2379"],
    );
    state.unreachable("http://e:2379", "refused the connection", 1_500);
    state.unreachable("http://e:2379", "refused the connection", 3_000);
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual([
      "etcd at http://e:2379 refused the connection; retrying in 1.5s; serving the last known endpoints",
    ]);
  });
});
