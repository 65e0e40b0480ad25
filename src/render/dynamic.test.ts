import { describe, expect, it } from "vitest";
import type { Services } from "../model/services.js";
import { endpointSets, LUA_MODULES } from "./dynamic.js";
import { bindRoutes, renderNginxConf } from "./index.js";
import { RenderBug } from "./tokens.js";
import { fnv1a64 } from "./hash.js";

const model = (prefix: string): Services => ({
  servers: [
    {
      domain: "a.test",
      port: 8080,
      routes: [
        {
          prefix,
          primary: { app: "app", service: "web", port: 9000 },
          backendPath: "/",
          backup: { app: "spare", service: "web", port: 9001 },
        },
      ],
    },
  ],
});
const backends = { "app-web": { "10.0.0.1": { weight: 3 } }, "spare-web": { "10.0.0.2": { weight: 1 } } };
const lua = (text: string) => Object.fromEntries(LUA_MODULES.map((m) => [m, text]));
const dynamic = {
  dir: "/tmp/nlb",
  controlPort: 9999,
  endpointsMode: "dynamic" as const,
  luaSource: lua("return {}\n"),
  pushToken: "0123456789abcdef0123456789abcdef",
};

describe("dynamic rendering", () => {
  it("refuses to render without every Lua module, a control port or a push token", () => {
    const desired = { services: model("/api"), backends };
    expect(() => renderNginxConf(desired, { ...dynamic, luaSource: {} })).toThrow(RenderBug);
    const { nginx_lb_push: _, ...noPush } = dynamic.luaSource;
    expect(() => renderNginxConf(desired, { ...dynamic, luaSource: noPush })).toThrow(/nginx_lb_push/);
    expect(() => renderNginxConf(desired, { ...dynamic, controlPort: undefined })).toThrow(RenderBug);
    for (const pushToken of [undefined, "", "short", "0123456789ABCDEF0123456789ABCDEF", `${"a".repeat(32)}")`])
      expect(() => renderNginxConf(desired, { ...dynamic, pushToken }), String(pushToken)).toThrow(RenderBug);
  });

  it("never emits a hostile prefix into the Lua of a location", () => {
    for (const prefix of ['/a")os.exit()--', "/a\\n", "/a b", "/a}"]) {
      const desired = { services: model(prefix), backends };
      expect(() => renderNginxConf(desired, dynamic)).toThrow(RenderBug);
    }
  });

  it("pushes exactly the members reload mode renders as server lines", () => {
    const plans = bindRoutes(model("/api"), backends);
    const sets = endpointSets(plans);
    expect(sets.toRecord()).toEqual({
      [plans[0]?.upstream ?? ""]: [
        { ip: "10.0.0.1", port: 9000, weight: 3, backup: false },
        { ip: "10.0.0.2", port: 9001, weight: 1, backup: true },
      ],
    });
    const reload = renderNginxConf({ services: model("/api"), backends }, { dir: "/tmp/nlb" }).conf;
    expect(reload).toContain("server 10.0.0.1:9000 weight=3");
    expect(reload).toContain("server 10.0.0.2:9001 weight=1 max_fails=1 fail_timeout=10s backup");
  });

  it("renders the same bytes whatever the endpoints, so an endpoint change never needs a reload", () => {
    const a = renderNginxConf({ services: model("/api"), backends }, dynamic);
    const b = renderNginxConf({ services: model("/api"), backends: {} }, dynamic);
    expect(b.conf).toBe(a.conf);
    expect(b.generation).toBe(a.generation);
  });

  it("changes the generation when the balancer changes, so a new balancer is loaded by a reload", () => {
    const desired = { services: model("/api"), backends };
    const a = renderNginxConf(desired, dynamic);
    const b = renderNginxConf(desired, {
      ...dynamic,
      luaSource: { ...dynamic.luaSource, nginx_lb_balancer: "return { v = 2 }\n" },
    });
    expect(a.conf.replace(/"[0-9a-f]{16}"/, "")).toBe(b.conf.replace(/"[0-9a-f]{16}"/, ""));
    expect(a.generation).not.toBe(b.generation);
  });
});

describe("the generation", () => {
  it("is the hash of nginx.conf with its mark in place, then each file's path and content (the whole-text reference)", () => {
    const desired = { services: model("/api"), backends };
    for (const options of [dynamic, { dir: "/tmp/nlb", controlPort: 9999 }, { dir: "/tmp/nlb" }]) {
      const r = renderNginxConf(desired, options);
      const draft = r.conf.replace(`return 200 "${r.generation}";`, `return 200 "@@NGINX_LB_GENERATION@@";`);
      expect(draft.includes("@@NGINX_LB_GENERATION@@")).toBe(options.controlPort !== undefined);
      expect(r.generation).toBe(fnv1a64(draft + r.files.map((f) => `${f.path}\n${f.content}`).join("\n")));
    }
  });
});
