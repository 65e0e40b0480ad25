import { afterAll, describe, expect, it } from "vitest";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { RenderBug } from "../../src/render/tokens.js";
import { renderNginxConf } from "../../src/render/index.js";
import { mustDesired } from "../helpers/model.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";

afterAll(cleanupNginx);

const desired = mustDesired(
  {
    servers: [
      {
        domain_name: "a.test",
        frontend_port: 8080,
        routes: {
          "/": { app: "web", service: "api", port: 80 },
          "/empty": { app: "none", service: "api", port: 80 },
        },
      },
    ],
  },
  { "web-api": { "127.0.0.2": { weight: 1 } } },
);

describe("traffic log rendering", () => {
  it("adds nothing of the traffic log without the option (the golden cases hold the default output byte for byte)", () => {
    const plain = renderNginxConf(desired, { dir: "/var/lib/nginx-lb" });
    expect(plain.conf).not.toMatch(/nlb_route|syslog|log_format|traffic/);
    expect(plain.conf).toContain("access_log off;");
  });

  it("tags every location of every route, also one answering 503, and passes the real nginx -t", async () => {
    const dir = await tempDir("nginx-lb-traffic-render-");
    const r = renderNginxConf(desired, {
      dir,
      trafficLogFile: `${dir}/logs/traffic.tsv`,
      accessLog: `${dir}/logs/access.log`,
    });
    const sets = [...r.conf.matchAll(/set \$nlb_route (nlb_[0-9a-f]{16});/g)].map((m) => m[1]);
    // `/` is one location; `/empty` is two (`/empty/` and `= /empty`), both tagged with the same upstream name.
    expect(sets).toHaveLength(3);
    expect(new Set(sets).size).toBe(2);
    expect(r.conf).toContain(`access_log ${dir}/logs/traffic.tsv nlb buffer=64k flush=1s;`);
    expect(r.conf).not.toContain("syslog");
    expect(r.conf).toContain(`access_log ${dir}/logs/access.log nlb_access;`);
    expect(r.conf).not.toMatch(/^ {4}access_log off;$/m);
    const check = await checkConfig(r, dir);
    expect(check.output).not.toMatch(/emerg|warn/);
    expect(check.ok).toBe(true);
  });

  it("with counters: one log_by_lua call, its own dict, the token-protected read endpoint, no record file; real nginx -t", async () => {
    const dir = await tempDir("nginx-lb-traffic-render-");
    const token = "0123456789abcdef0123456789abcdef";
    const r = renderNginxConf(desired, {
      dir,
      controlPort: 9901,
      endpointsMode: "dynamic",
      pushToken: token,
      luaSource: balancerLuaSource(),
      trafficCounters: true,
    });
    expect([...r.conf.matchAll(/set \$nlb_route (nlb_[0-9a-f]{16});/g)]).toHaveLength(3);
    expect(r.conf.match(/log_by_lua_block \{[^}\n]*require\("nginx_lb_stats"\)\.log\(ctx\) \}/g)).toHaveLength(1);
    expect(r.conf.match(/^ {4}log_by_lua_block/gm)).toHaveLength(1);
    expect(r.conf).toMatch(/^ {4}lua_shared_dict nginx_lb_stats \d+m;$/m);
    expect(r.conf).toContain(`content_by_lua_block { require("nginx_lb_stats").serve("${token}") }`);
    expect(r.conf).not.toMatch(/log_format nlb |traffic\.tsv/);
    // No log file either: without this nginx writes every request to its built-in access log.
    expect(r.conf).toMatch(/^ {4}access_log off;$/m);
    expect(r.files.map((f) => f.path)).toContain("lua/nginx_lb_stats.lua");
    const check = await checkConfig(r, dir);
    expect(check.output).not.toMatch(/emerg|warn/);
    expect(check.ok).toBe(true);
  });

  it("the log phase enters Lua only for what needs it: counters, outlier ejection, both, or neither", () => {
    const base = {
      dir: "/var/lib/nginx-lb",
      controlPort: 9901,
      endpointsMode: "dynamic" as const,
      pushToken: "0123456789abcdef0123456789abcdef",
      luaSource: balancerLuaSource(),
    };
    const off = { errors: 0, baseMs: 30_000, maxMs: 300_000, maxPercent: 50 };
    const http = (o: Partial<Parameters<typeof renderNginxConf>[1]>) =>
      renderNginxConf(desired, { ...base, ...o }).conf.match(/^ {4}log_by_lua_block .*$/gm) ?? [];
    expect(http({ trafficCounters: true })).toEqual([
      `    log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_outlier").log(ctx); require("nginx_lb_stats").log(ctx) }`,
    ]);
    expect(http({})).toEqual([`    log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_outlier").log(ctx) }`]);
    expect(http({ trafficCounters: true, outlier: off })).toEqual([
      `    log_by_lua_block { local ctx = ngx.ctx; require("nginx_lb_stats").log(ctx) }`,
    ]);
    expect(http({ outlier: off })).toEqual([]);
  });

  it("refuses counters without dynamic mode: only the Lua module counts", () => {
    expect(() => renderNginxConf(desired, { dir: "/var/lib/nginx-lb", trafficCounters: true })).toThrow(RenderBug);
  });

  it("refuses a record file path nginx would read differently", () => {
    for (const bad of ["relative/traffic.tsv", "/state dir/traffic.tsv", "/x;access_log /etc/passwd", "/x'y"])
      expect(() => renderNginxConf(desired, { dir: "/var/lib/nginx-lb", trafficLogFile: bad })).toThrow(/file path/);
  });
});
