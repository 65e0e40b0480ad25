import { describe, expect, it } from "vitest";
import { changedUpstreams, plan, type AppliedState, type EndpointSets } from "./plan.js";

const sets = (w: number): EndpointSets => ({
  nlb_0000000000000001: [
    { ip: "127.0.0.2", port: 80, weight: w, backup: false },
    { ip: "127.0.0.3", port: 80, weight: 1, backup: true },
  ],
  nlb_0000000000000002: [],
});
const dyn = (generation: string, endpoints: EndpointSets | null): AppliedState => ({
  mode: "dynamic",
  generation,
  endpoints,
});

describe("plan", () => {
  it("reloads when nothing runs yet", () => {
    expect(plan(null, dyn("g1", sets(1)))).toBe("reload");
    expect(plan(null, { mode: "reload", generation: "g1", endpoints: null })).toBe("reload");
  });

  it("reloads when the rendered config differs, whatever the endpoints", () => {
    expect(plan(dyn("g1", sets(1)), dyn("g2", sets(1)))).toBe("reload");
    expect(plan(dyn("g1", sets(1)), dyn("g2", sets(2)))).toBe("reload");
  });

  it("reloads when the endpoints mode changes", () => {
    expect(plan({ mode: "reload", generation: "g1", endpoints: null }, dyn("g1", sets(1)))).toBe("reload");
  });

  it("pushes when only endpoint sets differ", () => {
    expect(plan(dyn("g1", sets(1)), dyn("g1", sets(2)))).toBe("dynamic");
    const fewer: EndpointSets = { nlb_0000000000000001: sets(1)["nlb_0000000000000001"] ?? [] };
    expect(plan(dyn("g1", sets(1)), dyn("g1", fewer))).toBe("dynamic");
    expect(plan(dyn("g1", fewer), dyn("g1", sets(1)))).toBe("dynamic");
  });

  it("pushes when nginx's sets are unknown (restart or failed push)", () => {
    expect(plan(dyn("g1", null), dyn("g1", sets(1)))).toBe("dynamic");
  });

  it("does nothing when both are equal, regardless of upstream order", () => {
    const a = sets(1);
    const reordered: EndpointSets = Object.fromEntries(Object.entries(a).reverse());
    expect(plan(dyn("g1", a), dyn("g1", reordered))).toBe("none");
    expect(
      plan(
        { mode: "reload", generation: "g1", endpoints: null },
        { mode: "reload", generation: "g1", endpoints: null },
      ),
    ).toBe("none");
  });

  it("notices a flipped backup flag or a changed port", () => {
    const a = sets(1);
    const flip: EndpointSets = {
      ...a,
      nlb_0000000000000001: (a["nlb_0000000000000001"] ?? []).map((e) => ({ ...e, backup: !e.backup })),
    };
    const port: EndpointSets = {
      ...a,
      nlb_0000000000000001: (a["nlb_0000000000000001"] ?? []).map((e) => ({ ...e, port: 81 })),
    };
    expect(plan(dyn("g1", a), dyn("g1", flip))).toBe("dynamic");
    expect(plan(dyn("g1", a), dyn("g1", port))).toBe("dynamic");
  });
});

describe("changedUpstreams", () => {
  it("lists only the upstreams whose sets differ", () => {
    expect(changedUpstreams(sets(1), sets(1))).toEqual([]);
    expect(changedUpstreams(sets(1), sets(2))).toEqual(["nlb_0000000000000001"]);
  });

  it("gives null when the upstream names differ (a routing change)", () => {
    const fewer: EndpointSets = { nlb_0000000000000001: [] };
    expect(changedUpstreams(sets(1), fewer)).toBeNull();
    expect(changedUpstreams(fewer, sets(1))).toBeNull();
    expect(changedUpstreams({ nlb_0000000000000003: [] }, fewer)).toBeNull();
  });
});
