import { describe, expect, it } from "vitest";
import { parseServices } from "../model/services.js";
import type { Desired } from "../render/index.js";
import { bindRoutes } from "../render/index.js";
import { briefChange, briefDiff, diffRoutes, isEmptyChange } from "./diff.js";

const diffDesired = (before: Desired, after: Desired) =>
  diffRoutes(bindRoutes(before.services, before.backends), bindRoutes(after.services, after.backends));

const model = (routes: Record<string, string>) => {
  const r = parseServices({
    servers: [
      {
        domain_name: "x.test",
        routes: Object.fromEntries(Object.entries(routes).map(([p, app]) => [p, { app, service: "s" }])),
      },
    ],
  });
  if (!r.ok) throw new Error("invalid");
  return r.value;
};

describe("diffRoutes", () => {
  it("names the endpoints an endpoint change adds, drains and removes", () => {
    const services = model({ "/": "a", "/b": "b" });
    const before = {
      services,
      backends: { "a-s": { "10.0.0.1": { weight: 1 } }, "b-s": { "10.0.0.9": { weight: 1 } } },
    };
    const after = {
      services,
      backends: { ...before.backends, "a-s": { "10.0.0.1": { weight: 0 }, "10.0.0.2": { weight: 5 } } },
    };
    expect(diffDesired(before, after)).toEqual({
      upstreamsAdded: [],
      upstreamsRemoved: [],
      endpointsAdded: ["x.test:80/ 10.0.0.1:80 down", "x.test:80/ 10.0.0.2:80 w5"],
      endpointsRemoved: ["x.test:80/ 10.0.0.1:80 w1"],
    });
    expect(isEmptyChange(diffDesired(after, after))).toBe(true);
  });

  it("names the routes a routing change adds and removes, with their endpoints", () => {
    const backends = { "a-s": { "10.0.0.1": { weight: 1 } }, "b-s": { "10.0.0.9": { weight: 1 } } };
    const change = diffDesired(
      { services: model({ "/": "a" }), backends },
      { services: model({ "/b": "b" }), backends },
    );
    expect(change).toEqual({
      upstreamsAdded: ["x.test:80/b"],
      upstreamsRemoved: ["x.test:80/"],
      endpointsAdded: ["x.test:80/b 10.0.0.9:80 w1"],
      endpointsRemoved: ["x.test:80/ 10.0.0.1:80 w1"],
    });
  });
});

describe("briefDiff", () => {
  /** `sites` servers of one route each, `per` endpoints per site (some drained, one site without endpoints). */
  const bound = (sites: number, per: number) => {
    const r = parseServices({
      servers: Array.from({ length: sites }, (_, i) => ({
        domain_name: `s${i}.test`,
        routes: { "/": { app: `a${i}`, service: "s" }, ...(i % 3 === 0 ? { "/x": { app: "b", service: "s" } } : {}) },
      })),
    });
    if (!r.ok) throw new Error("invalid");
    const backends: Record<string, Record<string, { weight: number }>> = {};
    for (let i = 1; i < sites; i++)
      backends[`a${i}-s`] = Object.fromEntries(
        Array.from({ length: per }, (_, k) => [`10.0.${i % 250}.${k + 1}`, { weight: k % 4 }]),
      );
    backends["b-s"] = { "10.9.9.9": { weight: 2 } };
    return bindRoutes(r.value, backends);
  };

  it("equals the brief of the whole diff, against nothing and against routes, below and above the names kept", () => {
    for (const [sites, per] of [
      [1, 0],
      [3, 2],
      [40, 2],
      [101, 1],
      [150, 10],
    ] as const) {
      const routes = bound(sites, per);
      expect(briefDiff(null, routes)).toEqual(briefChange(diffRoutes(null, routes)));
      const other = bound(Math.max(1, sites - 1), per + 1);
      expect(briefDiff(other, routes)).toEqual(briefChange(diffRoutes(other, routes)));
    }
  });
});
