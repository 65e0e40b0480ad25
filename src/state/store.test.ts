import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ControlStore, resolveControl } from "./control.js";
import fc from "fast-check";
import { StateStore, stateText, type PersistedState } from "./store.js";

const dirs: string[] = [];
const dir = async () => {
  const d = await mkdtemp(join(tmpdir(), "nginx-lb-store-"));
  dirs.push(d);
  return d;
};
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});
const at = () => new Date("2026-01-02T03:04:05.678Z");

describe("StateStore.load", () => {
  it("no file: none", async () => {
    expect(await new StateStore(await dir(), at).load()).toEqual({ kind: "none", state: { version: 1 } });
  });

  it("a saved state: ok, as saved", async () => {
    const store = new StateStore(await dir(), at);
    await store.save({ version: 1, services: { servers: [] }, backends: {} });
    expect(await store.load()).toEqual({ kind: "ok", state: { version: 1, services: { servers: [] }, backends: {} } });
  });

  it.each([
    ["garbage bytes", Buffer.from([0x7b, 0xff, 0x00, 0x13]), /not valid JSON/],
    ["an unknown version", '{"version":2}', /unknown version 2/],
    ["a JSON array", "[]", /not a JSON object/],
    ["services of another shape", '{"version":1,"services":{"x":1}}', /services is not a routing model/],
  ] as const)("%s: reported and moved aside, never taken for empty silently", async (_, bytes, why) => {
    const d = await dir();
    await writeFile(join(d, "state.json"), bytes);
    const out = await new StateStore(d, at).load();
    expect(out).toMatchObject({ kind: "corrupt", state: { version: 1 }, file: join(d, "state.json") });
    if (out.kind !== "corrupt") return;
    expect(out.error).toMatch(why);
    expect(out.movedTo).toBe(join(d, "state.json.corrupt-2026-01-02T03-04-05-678Z"));
    expect(await readdir(d)).toEqual(["state.json.corrupt-2026-01-02T03-04-05-678Z"]);
    expect(await readFile(out.movedTo ?? "")).toEqual(Buffer.from(bytes));
  });
});

describe("resolveControl", () => {
  const port = async () => 40_001;
  const token = () => "c".repeat(32);

  it("first start: new settings, written to a 0600 control.json", async () => {
    const d = await dir();
    const out = await resolveControl(new ControlStore(d), {}, undefined, port, token);
    expect(out).toEqual({ settings: { controlPort: 40_001, pushToken: "c".repeat(32) } });
    expect(JSON.parse(await readFile(join(d, "control.json"), "utf8"))).toEqual(out.settings);
    expect((await stat(join(d, "control.json"))).mode & 0o777).toBe(0o600);
  });

  it("control.json wins over an older state.json's copy, which is moved into control.json when alone", async () => {
    const d = await dir();
    const legacy = { controlPort: 40_002, pushToken: "a".repeat(32) };
    expect((await resolveControl(new ControlStore(d), legacy, undefined, port, token)).settings).toEqual(legacy);
    const again = await resolveControl(new ControlStore(d), {}, undefined, port, token);
    expect(again).toEqual({ settings: legacy });
  });

  it("--control-port overrides the saved port and keeps the token", async () => {
    const d = await dir();
    await new ControlStore(d).save({ controlPort: 40_002, pushToken: "a".repeat(32) });
    const out = await resolveControl(new ControlStore(d), {}, 40_003, port, token);
    expect(out.settings).toEqual({ controlPort: 40_003, pushToken: "a".repeat(32) });
    expect(JSON.parse(await readFile(join(d, "control.json"), "utf8"))).toEqual(out.settings);
  });

  it("a new port is never one the routing table claims", async () => {
    const handed = [40_001, 40_001, 40_005];
    const next = async () => handed.shift() ?? 0;
    const out = await resolveControl(new ControlStore(await dir()), {}, undefined, next, token, new Set([40_001]));
    expect(out).toEqual({ settings: { controlPort: 40_005, pushToken: "c".repeat(32) } });
  });

  it("a saved port the routing table now claims moves; a requested one stays", async () => {
    const d = await dir();
    await new ControlStore(d).save({ controlPort: 40_002, pushToken: "a".repeat(32) });
    const claimed = new Set([40_002]);
    const out = await resolveControl(new ControlStore(d), {}, undefined, port, token, claimed);
    expect(out).toEqual({ settings: { controlPort: 40_001, pushToken: "a".repeat(32) }, moved: 40_002 });
    expect(JSON.parse(await readFile(join(d, "control.json"), "utf8"))).toEqual(out.settings);
    const kept = await resolveControl(new ControlStore(d), {}, 40_002, port, token, claimed);
    expect(kept).toEqual({ settings: { controlPort: 40_002, pushToken: "a".repeat(32) } });
  });

  it("a saved port another process holds moves (no nginx of ours keeps it); one nobody holds stays", async () => {
    const d = await dir();
    await new ControlStore(d).save({ controlPort: 40_002, pushToken: "a".repeat(32) });
    const free = await resolveControl(new ControlStore(d), {}, undefined, port, token, new Set(), async () => false);
    expect(free).toEqual({ settings: { controlPort: 40_002, pushToken: "a".repeat(32) } });
    const asked: number[] = [];
    const held = async (p: number) => (asked.push(p), p === 40_002);
    const out = await resolveControl(new ControlStore(d), {}, undefined, port, token, new Set(), held);
    expect(out).toEqual({ settings: { controlPort: 40_001, pushToken: "a".repeat(32) }, moved: 40_002, held: true });
    expect(asked).toEqual([40_002]);
    expect(JSON.parse(await readFile(join(d, "control.json"), "utf8"))).toEqual(out.settings);
    // A requested port is the operator's: never moved.
    const requested = await resolveControl(new ControlStore(d), {}, 40_002, port, token, new Set(), held);
    expect(requested.settings.controlPort).toBe(40_002);
  });

  it("an unusable control.json is reported and replaced", async () => {
    const d = await dir();
    await writeFile(join(d, "control.json"), "{");
    const out = await resolveControl(new ControlStore(d), {}, undefined, port, token);
    expect(out.unusable).toMatch(/not valid JSON/);
    expect(out.settings).toEqual({ controlPort: 40_001, pushToken: "c".repeat(32) });
  });
});

describe("stateText with kept pieces", () => {
  it("equals JSON.stringify, with unchanged servers and records taken from earlier saves", () => {
    const endpoint = fc.record({ weight: fc.integer({ min: 0, max: 100 }) });
    const records = fc.dictionary(fc.string({ maxLength: 6 }), fc.dictionary(fc.string({ maxLength: 6 }), endpoint));
    const servers = fc.array(fc.record({ domain: fc.string(), port: fc.nat(), routes: fc.constant([]) }));
    const encoded = new WeakMap<object, string>();
    fc.assert(
      fc.property(servers, records, fc.boolean(), (list, backends, withServices) => {
        const state = {
          version: 1 as const,
          ...(withServices ? { services: { servers: list } } : {}),
          backends,
          savedAt: "now",
        } as unknown as PersistedState;
        expect([...stateText(state, encoded)].join("")).toBe(`${JSON.stringify(state)}\n`);
        // Again with one server and one record replaced by new objects, the rest kept.
        const next = {
          ...state,
          ...(withServices
            ? { services: { servers: list.map((s, i) => (i === 0 ? { ...s, port: s.port + 1 } : s)) } }
            : {}),
          backends: Object.fromEntries(
            Object.entries(backends).map(([k, v], i) => [k, i === 0 ? { ...v, x: { weight: 1 } } : v]),
          ),
        } as unknown as PersistedState;
        expect([...stateText(next, encoded)].join("")).toBe(`${JSON.stringify(next)}\n`);
      }),
      { numRuns: 200 },
    );
  });
});

describe("StateStore.save", () => {
  it("writes JSON.stringify(state) and a newline, given in pieces (any state; property)", () => {
    const endpoints = fc.dictionary(fc.string(), fc.record({ weight: fc.nat(1000) }), { maxKeys: 4 });
    const state = fc.record(
      {
        version: fc.constant(1 as const),
        controlPort: fc.nat(65535),
        services: fc.record({ servers: fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }) }),
        backends: fc.option(fc.dictionary(fc.string(), endpoints, { maxKeys: 5 }), { nil: undefined }),
        savedAt: fc.string(),
      },
      { requiredKeys: ["version"] },
    );
    fc.assert(
      fc.property(state, (s) => {
        expect([...stateText(s as PersistedState)].join("")).toBe(`${JSON.stringify(s)}\n`);
      }),
      { numRuns: 300 },
    );
  });

  it("a state larger than a write batch: loaded back as saved, 0600", async () => {
    const d = await dir();
    const store = new StateStore(d, at);
    const backends: Record<string, Record<string, { weight: number }>> = {};
    for (let i = 0; i < 5000; i++)
      backends[`app${i}-web`] = Object.fromEntries(
        Array.from({ length: 10 }, (_, j) => [`10.${i >> 8}.${i & 255}.${j}`, { weight: j }]),
      );
    const state = { version: 1 as const, services: { servers: [] }, backends, savedAt: "2026-01-02T03:04:05.678Z" };
    await store.save(state);
    const text = await readFile(join(d, "state.json"), "utf8");
    expect(text.length).toBeGreaterThan(1 << 20);
    expect(text).toBe(`${JSON.stringify(state)}\n`);
    expect(await store.load()).toEqual({ kind: "ok", state });
    expect((await stat(join(d, "state.json"))).mode & 0o777).toBe(0o600);
    expect(await readdir(d)).toEqual(["state.json"]);
  });
});
