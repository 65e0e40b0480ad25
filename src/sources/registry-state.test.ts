import { describe, expect, test } from "vitest";
import pino from "pino";
import { RegistryState, backoffDelay } from "./registry-state.js";
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

describe("RegistryState", () => {
  const make = () => {
    const emitted: Snapshot<BackendSet>[] = [];
    const state = new RegistryState("/lb/backends", (s) => void emitted.push(s), pino({ level: "silent" }), []);
    return { state, emitted };
  };

  test("nothing is emitted while disconnected before the first list: no value is known yet", () => {
    const { state, emitted } = make();
    state.unreachable("connection refused");
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
    state.unreachable("connection refused");
    expect(emitted).toHaveLength(2);
    expect(emitted[1]).toMatchObject({ connected: false, value: { "a-b": { "10.0.0.1": { weight: 5 } } } });
    state.keys.set("/lb/backends/a-b/ips/bad", "{}");
    state.publish(true, "etcd revision 4");
    expect(emitted[2]?.warnings).toEqual([expect.objectContaining({ path: "/lb/backends/a-b/ips/bad" })]);
  });
});
