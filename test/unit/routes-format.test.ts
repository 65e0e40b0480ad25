import { describe, expect, it } from "vitest";
import { Table } from "../../src/model/table.js";
import { encodeRoutes } from "../../src/nginx/routes-push.js";
import { bindRoutes, routeTable } from "../../src/render/index.js";
import { mustDesired } from "../helpers/model.js";

describe("the routing table pushed to nginx", () => {
  const { services, backends } = mustDesired({
    servers: [
      {
        domain_name: "Shop.Example.org",
        frontend_port: 8080,
        routes: {
          "/": { app: "shop", service: "web", port: 80, backend_path: "/v2" },
          "/api/": { app: "shop", service: "api", port: 81, backup: { app: "old", service: "api", port: 81 } },
        },
      },
      { domain_name: "*.apps.example.org", frontend_port: 8080, routes: {} },
    ],
  });
  const routes = bindRoutes(services, backends);

  it("keys each server by port and lower-case domain; a route is prefix, upstream, backend_path, backend", () => {
    const table = routeTable(services.servers, routes);
    const [root, api] = routes.map((r) => r.upstream);
    expect(table.toRecord()).toEqual({
      "8080 shop.example.org": `/ ${String(root)} /v2 shop-web;/api ${String(api)} / shop-api;`,
      "8080 *.apps.example.org": "",
    });
  });

  it("encodes a whole table, and a partial one whose removed servers are lines without '='", () => {
    const table = Table.of({ "80 a.test": "/ nlb_0123456789abcdef / a-web;", "80 b.test": "" });
    expect(encodeRoutes(3, table)).toBe(
      "nginx-lb-routes version=3\n80 a.test=/ nlb_0123456789abcdef / a-web;\n80 b.test=\nend servers=2\n",
    );
    expect(encodeRoutes(4, table, { base: 3, changed: ["80 b.test", "80 gone.test"] })).toBe(
      "nginx-lb-routes version=4 base=3\n80 b.test=\n80 gone.test\nend servers=2\n",
    );
  });
});
