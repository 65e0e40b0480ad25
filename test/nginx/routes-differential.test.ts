import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawExchange } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePorts, serveNginx, type ServedNginx } from "../helpers/nginx.js";

/**
 * Reload mode is the truth of what a route sends: the same raw requests go through a reload-mode nginx (routes and
 * endpoints rendered) and a dynamic-routes nginx (routes pushed to the Lua router), and what the client gets and what
 * the backend receives (its request line, byte for byte, and Host) must be the same. The backend and the client are
 * raw TCP, so no HTTP library cleans up a path on the way.
 */

const BACKEND = "127.0.0.2";
let backend: Server;
let backendPort = 0;
let reload: ServedNginx;
let routed: ServedNginx;

/** A backend that answers every request with the request line and Host it received (latin1: bytes as they came). */
function rawBackend(): Promise<Server> {
  const srv = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1").split("\r\n");
      const host = head.find((l) => /^host:/i.test(l)) ?? "";
      const body = JSON.stringify({ line: head[0], host: host.replace(/^host:\s*/i, "") });
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    sock.on("error", () => undefined);
  });
  return new Promise((resolve) => srv.listen(0, BACKEND, () => resolve(srv)));
}

/** One raw request: the request line's target as bytes (latin1), the Host header (none: HTTP/1.0 without Host). */
async function raw(port: number, target: string, host: string | null): Promise<string> {
  const head =
    host === null
      ? `GET ${target} HTTP/1.0\r\n\r\n`
      : `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
  return (await rawExchange(port, Buffer.from(head, "latin1"))).toString("latin1");
}

/** What a client and the backend saw: status, content type and body (the backend's echo of its request line). */
function seen(response: string): { status: string; type: string; body: string } {
  const end = response.indexOf("\r\n\r\n");
  const head = response.slice(0, end).split("\r\n");
  const type = head.find((l) => /^content-type:/i.test(l)) ?? "";
  return { status: head[0] ?? "", type, body: response.slice(end + 4) };
}

beforeAll(async () => {
  backend = await rawBackend();
  const addr = backend.address();
  backendPort = typeof addr === "object" && addr ? addr.port : 0;
  const [p1, p2] = await freePorts(2);
  const model = (port: number) => {
    const r = (backend_path?: string) => ({
      app: "raw",
      service: "echo",
      port: backendPort,
      ...(backend_path ? { backend_path } : {}),
    });
    return {
      servers: [
        {
          domain_name: "d.test",
          frontend_port: port,
          routes: {
            "/": r("/v2"),
            "/suburl": r("/"),
            "/keep": r("/keep/"),
            "/deep/er/": r("/d/"),
            "/p": r("/p"),
            "/q/": r("/q/r"),
            "/empty": { app: "none", service: "echo", port: backendPort },
          },
        },
        { domain_name: "other.test", frontend_port: port, routes: { "/": r() } },
        { domain_name: "noroot.test", frontend_port: port, routes: { "/api": r("/v1/") } },
        { domain_name: "*.w.test", frontend_port: port, routes: { "/": r("/wild") } },
        { domain_name: "*.x.w.test", frontend_port: port, routes: { "/": r("/longer") } },
        { domain_name: "e.w.test", frontend_port: port, routes: { "/": r("/exact") } },
        { domain_name: "Mixed.Case.test", frontend_port: port, routes: { "/": r("/mixed") } },
        { domain_name: "bare.test", frontend_port: port, routes: {} },
      ],
    };
  };
  const backends = { "raw-echo": { [BACKEND]: { weight: 1 } } };
  reload = await serveNginx({ ...mustDesired(model(p1 ?? 0), backends), mode: "reload", routesMode: "reload" });
  routed = await serveNginx({ ...mustDesired(model(p2 ?? 0), backends), mode: "dynamic", routesMode: "dynamic" });
});

afterAll(async () => {
  await cleanupNginx();
  await new Promise((r) => backend.close(r));
});

const PATHS = [
  "/",
  "/foo?x=1",
  "/foo?",
  "/foo?a=%2F%20b&c=d+e&&f=%26&g=%E4%BD%A0&h",
  "/suburl",
  "/suburl/",
  "/suburl?q=1",
  "/suburl/x",
  "/suburl/x/y/",
  "/suburlx",
  "/suburl/a%2Fb",
  "/suburl/a%2Fb?c=%2F",
  "/suburl//a//b",
  "/suburl/a//b%2F",
  "/suburl/./x",
  "/suburl/../x",
  "/suburl/a/../b",
  "/suburl/a/./b%20c",
  "/suburl/%2e%2e/x",
  "/suburl/sp%20ace",
  "/suburl/%E4%BD%A0",
  "/suburl/\xe4\xbd\xa0",
  "/suburl/\xe4%20",
  "/suburl/.hidden%20x",
  "/suburl/x%3Fy?z",
  "/suburl/x%23y",
  "/suburl/a+b",
  "/suburl/a;b=c",
  "/suburl/%7Euser",
  "/suburl/~user",
  "/suburl/%3C%3E%22%5C%5E%60%7B%7C%7D",
  "/suburl/<x>",
  "/suburl/{|}^`",
  "/suburl/%25",
  "/suburl/%",
  "/suburl/%zz",
  "/suburl/%00",
  "/suburl/x#frag",
  "/suburl/a#b%20c",
  "/suburl/a#b\xe4",
  "/suburl/\xe4/./x",
  "/suburl/\xe4//x",
  "/suburl/%41/\xe4",
  "/suburl/\xe4?%20",
  "/suburl/a?b%20\xe4",
  "/%73uburl/x",
  "/%73uburl",
  "//suburl/x",
  "/SUBURL/x",
  "/deep/er",
  "/deep/er/",
  "/deep/erx",
  "/deep/er/y%2Fz",
  "/deep/e",
  "/keep",
  "/keep/",
  "/keep/a%2Fb?q=%2F",
  "/keep//x",
  "/keepx",
  "/p",
  "/p/",
  "/p/..%2F..%2Fetc",
  "/p/a%2F..%2Fb",
  "/px",
  "/q",
  "/q/",
  "/q/s",
  "/q/s%2F",
  "/empty",
  "/empty/x",
  "/emptyish",
  "/a/../../etc/passwd",
  "/foo?a#b",
  "/foo?a=1#",
  "/foo#a?b",
  "/foo?a?b#c?d",
  "/suburl/x?a#b",
  "/suburl/x#a?b",
  "/suburl/%41?x#y",
  "/suburl/%41#x?y",
  "/suburl/a%2Fb?#",
  "http://d.test/suburl/x?q=1",
  "http://d.test/foo?a#b",
  "http://d.test?x",
  "http://other.test?x",
  "http://other.test",
  "http://other.test/a%2Fb?c#d",
  "http://other.test/a/../b?c",
  "http://other.test/a#b?c",
];

describe("dynamic routes send what reload mode sends", () => {
  it("the same answer and the same request line at the backend, for every path of the table and odd bytes", async () => {
    const differ: string[] = [];
    for (const path of PATHS) {
      const a = seen(await raw(reload.port, path, "d.test"));
      const b = seen(await raw(routed.port, path, "d.test"));
      if (JSON.stringify(a) !== JSON.stringify(b))
        differ.push(`${JSON.stringify(path)}: reload ${JSON.stringify(a)} dynamic ${JSON.stringify(b)}`);
    }
    expect(differ).toEqual([]);
    // The comparison is not vacuous: the table's rows reach the backend as the README says.
    expect(JSON.parse(seen(await raw(routed.port, "/suburl/x", "d.test")).body)).toMatchObject({
      line: "GET /x HTTP/1.1",
    });
    expect(JSON.parse(seen(await raw(routed.port, "/keep/a%2Fb?q=%2F", "d.test")).body)).toMatchObject({
      line: "GET /keep/a%2Fb?q=%2F HTTP/1.1",
    });
  });

  it("the same site for every Host: exact, wildcards (longest first), case, port, unknown, none", async () => {
    const hosts = [
      "d.test",
      "D.TEST",
      "d.test:80",
      "d.test.",
      "other.test",
      "a.w.test",
      "a.b.w.test",
      "w.test",
      "e.w.test",
      "y.x.w.test",
      "x.w.test",
      "mixed.case.TEST",
      "noroot.test",
      "bare.test",
      "unknown.test",
      "",
      "[::1]",
      "127.0.0.1",
    ];
    const differ: string[] = [];
    for (const host of [...hosts, null])
      for (const path of ["/", "/api", "/api/x", "/apix", "/suburl/a%2Fb"]) {
        const a = seen(await raw(reload.port, path, host));
        const b = seen(await raw(routed.port, path, host));
        if (JSON.stringify(a) !== JSON.stringify(b))
          differ.push(`${String(host)} ${path}: reload ${JSON.stringify(a)} dynamic ${JSON.stringify(b)}`);
      }
    expect(differ).toEqual([]);
  });

  it("renders nothing per site in dynamic routes mode", async () => {
    const conf = (await import("node:fs")).readFileSync(`${routed.dir}/nginx.conf`, "utf8");
    expect(conf).not.toContain("d.test");
    expect(conf).not.toContain("location /suburl");
    expect(conf.match(/^\s+server \{/gm)?.length).toBe(2);
  });
});
