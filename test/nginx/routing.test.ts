import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, serveNginx } from "../helpers/nginx.js";

// One nginx, two sites on one port, every prefix rule; each backend answers with its own address and what it got.
let pool: BackendPool;
let port: number;
const url = (path: string) => `http://127.0.0.1:${port}${path}`;
const demo = (path: string, headers?: Record<string, string>) =>
  get(url(path), { host: "demo.test", ...(headers ? { headers } : {}) });

beforeAll(async () => {
  pool = await startBackends(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
  port = await freePort();
  const bp = pool.port;
  const desired = mustDesired(
    {
      servers: [
        {
          domain_name: "demo.test",
          frontend_port: port,
          routes: {
            "/": { app: "root", service: "api", port: bp, backend_path: "/v2" },
            "/suburl/": { app: "sub", service: "web", port: bp },
            "/suburl/deep": { app: "deep", service: "web", port: bp, backend_path: "/d/" },
            "/empty": { app: "nobody", service: "home", port: bp },
          },
        },
        { domain_name: "*.wild.test", frontend_port: port, routes: { "/": { app: "sub", service: "web", port: bp } } },
        {
          domain_name: "exact.wild.test",
          frontend_port: port,
          routes: { "/": { app: "other", service: "web", port: bp } },
        },
        {
          domain_name: "noroot.test",
          frontend_port: port,
          routes: { "/api": { app: "other", service: "web", port: bp } },
        },
        {
          domain_name: "other.test",
          frontend_port: port,
          routes: {
            "/": { app: "other", service: "web", port: bp },
            "/keep": { app: "sub", service: "web", port: bp, backend_path: "/keep/" },
          },
        },
      ],
    },
    {
      "root-api": { "127.0.0.2": { weight: 1 } },
      "sub-web": { "127.0.0.3": { weight: 1 } },
      "deep-web": { "127.0.0.4": { weight: 1 } },
      "other-web": { "127.0.0.5": { weight: 1 } },
    },
  );
  await serveNginx({ ...desired, workers: 1 });
});

afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

async function echo(path: string, host = "demo.test"): Promise<Echo> {
  const r = await get(url(path), { host });
  expect(r.status, `${host}${path}: ${r.body}`).toBe(200);
  return r.json<Echo>();
}

describe("host routing", () => {
  it("sends each Host to its own site", async () => {
    expect((await echo("/", "demo.test")).backend).toBe("127.0.0.2");
    expect((await echo("/", "other.test")).backend).toBe("127.0.0.5");
  });

  it("matches Host case-insensitively and with the port", async () => {
    expect((await echo("/", "OTHER.Test")).backend).toBe("127.0.0.5");
    expect((await echo("/", `other.test:${port}`)).backend).toBe("127.0.0.5");
  });

  it("a wildcard domain takes every subdomain depth, not the bare domain; an exact name wins over it", async () => {
    expect((await echo("/", "a.wild.test")).backend).toBe("127.0.0.3");
    expect((await echo("/", "x.y.wild.test")).backend).toBe("127.0.0.3");
    expect((await echo("/", "exact.wild.test")).backend).toBe("127.0.0.5");
    expect((await get(url("/"), { host: "wild.test" })).status).toBe(404);
  });

  it("answers 404 for an unknown Host, never another site", async () => {
    const r = await get(url("/"), { host: "unknown.test" });
    expect(r.status).toBe(404);
    expect(r.headers["x-backend"]).toBeUndefined();
    expect(r.body).toContain("no site");
  });
});

describe("prefix rules", () => {
  it("a site without a / route answers 404 for paths no route matches (never files from nginx's prefix)", async () => {
    for (const path of ["/", "/x", "/apix", "/index.html"]) {
      const r = await get(url(path), { host: "noroot.test" });
      expect(r.status, path).toBe(404);
      expect(r.headers["x-backend"]).toBeUndefined();
      expect(r.body).toBe("no route for this path\n");
    }
    expect((await echo("/api/x", "noroot.test")).url).toBe("/x");
  });

  it("route / with backend_path /v2 maps /foo?x=1 to /v2/foo?x=1", async () => {
    expect(await echo("/foo?x=1")).toMatchObject({ backend: "127.0.0.2", url: "/v2/foo?x=1" });
  });

  it("route /suburl (key written with a trailing slash) strips the prefix", async () => {
    expect(await echo("/suburl/x")).toMatchObject({ backend: "127.0.0.3", url: "/x" });
    expect(await echo("/suburl/x/y/")).toMatchObject({ backend: "127.0.0.3", url: "/x/y/" });
    expect(await echo("/suburl/")).toMatchObject({ backend: "127.0.0.3", url: "/" });
  });

  it("route /suburl maps /suburl itself to the backend_path", async () => {
    expect(await echo("/suburl")).toMatchObject({ backend: "127.0.0.3", url: "/" });
    expect(await echo("/suburl?q=1")).toMatchObject({ backend: "127.0.0.3", url: "/?q=1" });
  });

  it("/suburlx is not the /suburl route", async () => {
    expect(await echo("/suburlx")).toMatchObject({ backend: "127.0.0.2", url: "/v2/suburlx" });
  });

  it("the longest prefix wins, whatever the key order", async () => {
    expect(await echo("/suburl/deep/y")).toMatchObject({ backend: "127.0.0.4", url: "/d/y" });
    expect(await echo("/suburl/deep")).toMatchObject({ backend: "127.0.0.4", url: "/d" });
    expect(await echo("/suburl/deeper")).toMatchObject({ backend: "127.0.0.3", url: "/deeper" });
  });

  it("passes query strings untouched, encoded characters included", async () => {
    const q = "?a=%2F%20b&c=d+e&&f=%26&g=%E4%BD%A0&h";
    expect((await echo(`/suburl/x${q}`)).url).toBe(`/x${q}`);
    expect((await echo(`/p${q}`)).url).toBe(`/v2/p${q}`);
  });

  it("passes the request URI byte for byte when the route maps a path to itself (%2F, //, %20 kept)", async () => {
    for (const path of ["/projects/group%2Fname?x=%2F", "/a//b", "/sp%20ace", "/%7Euser"])
      expect(await echo(path, "other.test")).toMatchObject({ backend: "127.0.0.5", url: path });
    for (const path of ["/keep/a%2Fb?q=%2F", "/keep", "/keep/"])
      expect(await echo(path, "other.test")).toMatchObject({ backend: "127.0.0.3", url: path });
  });

  it("passes every method and the request body", async () => {
    const r = await get(url("/suburl/form"), { host: "demo.test", method: "POST", body: "a=1" });
    expect(r.json<Echo>()).toMatchObject({ method: "POST", url: "/form" });
  });
});

describe("a route with no endpoint", () => {
  it("answers 503 naming the route, while the other routes keep working", async () => {
    for (const path of ["/empty", "/empty/x"]) {
      const r = await demo(path);
      expect(r.status).toBe(503);
      expect(r.body).toContain("/empty");
      expect(r.body).toContain("nobody-home");
    }
    expect((await echo("/emptyish")).url).toBe("/v2/emptyish");
    expect((await echo("/suburl/x")).backend).toBe("127.0.0.3");
  });
});

describe("headers the backend receives", () => {
  it("Host as the client sent it, port included, and the X-Forwarded-* family", async () => {
    const r = await get(url("/suburl/h"), { host: `demo.test:${port}` });
    const { headers } = r.json<Echo>();
    expect(headers).toMatchObject({
      host: `demo.test:${port}`,
      "x-real-ip": "127.0.0.1",
      "x-forwarded-for": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": `demo.test:${port}`,
    });
  });

  it("appends the client to an incoming X-Forwarded-For and keeps other headers", async () => {
    const r = await demo("/suburl/h", { "x-forwarded-for": "203.0.113.9", "x-custom": "yes" });
    expect(r.json<Echo>().headers).toMatchObject({
      host: "demo.test",
      "x-forwarded-for": "203.0.113.9, 127.0.0.1",
      "x-custom": "yes",
    });
  });

  it("overwrites what a client claims in X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host", async () => {
    const r = await demo("/suburl/h", {
      "x-real-ip": "203.0.113.1",
      "x-forwarded-proto": "https",
      "x-forwarded-host": "evil.test",
    });
    expect(r.json<Echo>().headers).toMatchObject({
      "x-real-ip": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": "demo.test",
    });
  });

  it("does not forward an Upgrade the client did not ask for (keepalive stays possible)", async () => {
    const { headers } = (await demo("/suburl/h")).json<Echo>();
    expect(headers["upgrade"]).toBeUndefined();
    expect(headers["connection"]).toBeUndefined();
  });

  it("passes websocket upgrades only: an h2c upgrade (request smuggling past the route prefix) is not forwarded", async () => {
    const { headers } = (
      await demo("/suburl/h", {
        upgrade: "h2c",
        connection: "Upgrade, HTTP2-Settings",
        "http2-settings": "AAMAAABkAAQAAP__",
      })
    ).json<Echo>();
    expect(headers["upgrade"]).toBeUndefined();
    expect(headers["connection"]).toBeUndefined();
  });
});
