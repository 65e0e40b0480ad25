import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ControlStore, resolveControl } from "./control.js";
import fc from "fast-check";
import { encodeState, StateStore, type PersistedState } from "./store.js";

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

  it("an unusable control.json is reported and replaced", async () => {
    const d = await dir();
    await writeFile(join(d, "control.json"), "{");
    const out = await resolveControl(new ControlStore(d), {}, undefined, port, token);
    expect(out.unusable).toMatch(/not valid JSON/);
    expect(out.settings).toEqual({ controlPort: 40_001, pushToken: "c".repeat(32) });
  });
});

describe("encodeState", () => {
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
        expect(encodeState(state, encoded)).toBe(JSON.stringify(state));
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
        expect(encodeState(next, encoded)).toBe(JSON.stringify(next));
      }),
      { numRuns: 200 },
    );
  });
});
