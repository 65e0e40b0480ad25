import { describe, expect, it } from "vitest";
import type { Services } from "../../src/model/services.js";
import { topologyOf } from "../../src/reconciler/topology.js";
import { bindRoutes } from "../../src/render/index.js";

describe("topologyOf", () => {
  it("puts each route under its own server, in services order, with its endpoints and roles", () => {
    const ref = (service: string) => ({ app: "a", service, port: 80 });
    const services: Services = {
      servers: [
        { domain: "one.test", port: 80, routes: [{ prefix: "/", primary: ref("x"), backendPath: "/" }] },
        { domain: "two.test", port: 80, routes: [] },
        {
          domain: "one.test",
          port: 8080,
          tls: { port: 8443, certificate: "c", key: "k" },
          routes: [
            { prefix: "/a", primary: ref("x"), backendPath: "/", backup: ref("y") },
            { prefix: "/b", primary: ref("y"), backendPath: "/v2" },
          ],
        },
      ],
    };
    const backends = {
      "a-x": { "10.0.0.1": { weight: 2 }, "::1": { weight: 0 } },
      "a-y": { "10.0.0.2": { weight: 1 } },
    };
    const t = topologyOf(services, bindRoutes(services, backends));
    expect(t.servers.map((s) => [s.domain, s.port, s.tlsPort, s.routes.map((r) => r.label)])).toEqual([
      ["one.test", 80, undefined, ["one.test:80/"]],
      ["two.test", 80, undefined, []],
      ["one.test", 8080, 8443, ["one.test:8080/a", "one.test:8080/b"]],
    ]);
    expect(t.servers[2]?.routes[0]?.endpoints).toEqual([
      { address: "10.0.0.1:80", weight: 2, role: "primary" },
      { address: "[::1]:80", weight: 0, role: "down" },
      { address: "10.0.0.2:80", weight: 1, role: "backup" },
    ]);
    expect(t.servers[2]?.routes[1]).toMatchObject({ backend: "a-y:80", backendPath: "/v2" });
    expect(JSON.stringify(t)).not.toContain('"k"');
    // The endpoints are made when read (not held per route): JSON carries them, a fresh array per read. A spread does
    // not (the getter is the class's), which is why the status view (admin/view.ts) sets them itself.
    const json = JSON.parse(JSON.stringify(t)) as typeof t;
    expect(json.servers[2]?.routes[0]).toEqual({
      prefix: "/a",
      label: "one.test:8080/a",
      upstream: t.servers[2]?.routes[0]?.upstream,
      backend: "a-x:80",
      backendPath: "/",
      backup: "a-y:80",
      endpoints: t.servers[2]?.routes[0]?.endpoints,
    });
    expect(t.servers[2]?.routes[0]?.endpoints).not.toBe(t.servers[2]?.routes[0]?.endpoints);
  });
});
