import { describe, expect, it } from "vitest";
import { diffTopology, formatChange, summarize, type RouteShape, type ServerShape } from "./diff-view.js";

const r = (prefix: string, more: Partial<RouteShape> = {}): RouteShape => ({
  prefix,
  upstream: `nlb_${prefix.length.toString(16).padStart(16, "0")}`,
  backend: "web-api:8000",
  backendPath: "/",
  ...more,
});
const s = (domain: string, routes: RouteShape[], more: Partial<ServerShape> = {}): ServerShape => ({
  domain,
  port: 80,
  routes,
  ...more,
});
const lines = (before: ServerShape[], after: ServerShape[]) => diffTopology(before, after).map(formatChange);

describe("diffTopology", () => {
  it("nothing", () => expect(lines([s("a", [r("/")])], [s("a", [r("/")])])).toEqual([]));
  it("empty to empty", () => expect(lines([], [])).toEqual([]));
  it("endpoints are not part of it", () =>
    expect(diffTopology([s("a", [r("/")])], [s("a", [{ ...r("/"), endpoints: [] } as RouteShape])])).toEqual([]));
  it("a server added, with its routes", () =>
    expect(lines([], [s("a", [r("/")], { tlsPort: 443 })])).toEqual([
      "+ server a:80 tls port 443",
      "+ route a:80/ -> web-api:8000 (upstream nlb_0000000000000001)",
    ]));
  it("a server removed, with its routes", () =>
    expect(lines([s("a", [r("/x")])], [])).toEqual([
      "- server a:80",
      "- route a:80/x -> web-api:8000 (upstream nlb_0000000000000002)",
    ]));
  it("the same domain on another port is another server", () =>
    expect(lines([s("a", [])], [s("a", [], { port: 81 })])).toEqual(["+ server a:81", "- server a:80"]));
  it("a TLS port added", () =>
    expect(lines([s("a", [])], [s("a", [], { tlsPort: 443 })])).toEqual(["~ server a:80: tls port none -> 443"]));
  it("a route added", () =>
    expect(lines([s("a", [])], [s("a", [r("/api", { backup: "x-y:1" })])])).toEqual([
      "+ route a:80/api -> web-api:8000 backup x-y:1 (upstream nlb_0000000000000004)",
    ]));
  it("a route removed", () =>
    expect(lines([s("a", [r("/", { backendPath: "/v2" })])], [s("a", [])])).toEqual([
      "- route a:80/ -> web-api:8000 path /v2 (upstream nlb_0000000000000001)",
    ]));
  it("a backend changed", () =>
    expect(lines([s("a", [r("/")])], [s("a", [r("/", { backend: "web-v2:8000" })])])).toEqual([
      "~ route a:80/: backend web-api:8000 -> web-v2:8000",
    ]));
  it("a backend port changed", () =>
    expect(lines([s("a", [r("/")])], [s("a", [r("/", { backend: "web-api:9000" })])])).toEqual([
      "~ route a:80/: backend web-api:8000 -> web-api:9000",
    ]));
  it("a backend path and a backup changed together", () =>
    expect(lines([s("a", [r("/")])], [s("a", [r("/", { backendPath: "/v2", backup: "s-t:1" })])])).toEqual([
      "~ route a:80/: backend path / -> /v2; backup none -> s-t:1",
    ]));
  it("an upstream renamed", () =>
    expect(lines([s("a", [r("/")])], [s("a", [r("/", { upstream: "nlb_0000000000000001_2" })])])).toEqual([
      "~ route a:80/: upstream nlb_0000000000000001 -> nlb_0000000000000001_2",
    ]));
  it("route order does not matter", () =>
    expect(lines([s("a", [r("/"), r("/b")])], [s("a", [r("/b"), r("/")])])).toEqual([]));
});

describe("summarize", () => {
  it("none", () => expect(summarize([])).toBe("no change"));
  it("counts by kind and operation", () =>
    expect(summarize(diffTopology([s("a", [r("/"), r("/x")])], [s("b", [r("/")])]))).toBe(
      "1 server added, 1 server removed, 1 route added, 2 routes removed",
    ));
});
