import { afterEach, describe, expect, test, vi } from "vitest";
import type { StatusView } from "../admin/view.js";
import { adminBaseUrl, formatStatus, statusCommand, unhealthy } from "./status.js";

afterEach(() => vi.restoreAllMocks());

describe("nginx-lb status", () => {
  test("an unreadable --admin-token-file is exit 2 naming the flag, before any request", async () => {
    vi.stubEnv("NGINX_LB_ADMIN_TOKEN", undefined);
    const errors: string[] = [];
    vi.spyOn(console, "error").mockImplementation((m: string) => void errors.push(m));
    const fetch = vi.spyOn(globalThis, "fetch");
    const code = await statusCommand({ admin: "http://127.0.0.1:9", adminTokenFile: "/nonexistent/token" });
    expect(code).toBe(2);
    expect(errors.join("\n")).toMatch(/cannot read --admin-token-file: .*ENOENT/);
    expect(fetch).not.toHaveBeenCalled();
    vi.unstubAllEnvs();
  });
});

const view = (over: Partial<StatusView> = {}): StatusView => ({
  now: "2026-01-01T00:00:00.000Z",
  ready: { ready: true, why: "nginx runs generation abc" },
  startedAt: "2026-01-01T00:00:00.000Z",
  services: { file: "/etc/nginx-lb/services.json", valid: true, errors: [], warnings: [] },
  registry: { kind: "backends-file", connected: true, origin: "f", warnings: [], valid: true, errors: [] },
  nginx: { running: true, pid: 1, generation: "abc" },
  counters: { applied: 1, failed: 0, unchanged: 0, reloads: 0, pushes: 0 },
  persist: null,
  lastSuccessAt: null,
  secondsSinceLastSuccess: null,
  servers: [],
  applies: [],
  ...over,
});

describe("nginx-lb status helpers", () => {
  test("--admin takes a URL or HOST:PORT", () => {
    expect(adminBaseUrl("127.0.0.1:9180")?.href).toBe("http://127.0.0.1:9180/");
    expect(adminBaseUrl("[::1]:9180")?.href).toBe("http://[::1]:9180/");
    expect(adminBaseUrl("localhost:9180")?.href).toBe("http://localhost:9180/");
    expect(adminBaseUrl("https://lb.example:9180/admin")?.href).toBe("https://lb.example:9180/admin/");
    expect(adminBaseUrl("ftp://x:1")).toBeNull();
    expect(adminBaseUrl("127.0.0.1:notaport")).toBeNull();
  });

  test("exit 1 names every reason: not ready, an invalid routing file, invalid registry content", () => {
    expect(unhealthy(view())).toBeNull();
    const p = { code: "x", path: "a", message: "m" };
    expect(unhealthy(view({ services: { ...view().services, warnings: [p] } }))).toBeNull();
    const why = unhealthy(
      view({
        ready: { ready: false, why: "nginx is not running" },
        services: { ...view().services, valid: false, errors: [p] },
        registry: { ...view().registry, valid: false, errors: [p] },
      }),
    );
    expect(why).toBe(
      "not ready: nginx is not running; the routing file /etc/nginx-lb/services.json is invalid (the last valid routes stay in force); the registry content is invalid (backends-file; the endpoints in force stay)",
    );
  });

  test("a pending routing change and a wait for the registry are shown and are exit 1", () => {
    const pending = { since: "2026-01-01T00:00:00.000Z", error: "bind() to 127.0.0.1:8081 failed", nextRetryAt: "x" };
    const s = view({
      services: { ...view().services, pending },
      waiting: "waiting for the registry; nginx keeps serving what it had",
    });
    expect(formatStatus(s)).toMatch(/routing change\s+pending\s+since 2026-01-01T00:00:00.000Z.*8081 failed/);
    expect(formatStatus(s)).toMatch(/waiting\s+yes\s+waiting for the registry/);
    expect(unhealthy(s)).toBe(
      "a routing change is pending: nginx refused it (bind() to 127.0.0.1:8081 failed); the routes in force serve, it is retried; waiting for the registry; nginx keeps serving what it had",
    );
  });

  test("lists the first 50 problems and says how many more --json holds", () => {
    const warnings = Array.from({ length: 120 }, (_, i) => ({ code: "w", path: `/k/${i}`, message: "odd weight" }));
    const out = formatStatus(view({ registry: { ...view().registry, warnings } }));
    expect(out).toContain("/k/49");
    expect(out).not.toContain("/k/50 ");
    expect(out).toContain("... and 70 more (nginx-lb status --json lists them all)");
  });
});

describe("nginx-lb status: health checks", () => {
  const route = (failOpen: boolean) => ({
    prefix: "/",
    label: "a.test:80/",
    upstream: "nlb_x",
    backend: "a-s:80",
    backendPath: "/",
    traffic: null,
    endpoints: [
      { address: "10.0.0.1:80", weight: 1, role: "primary" as const, health: { state: "up" as const } },
      {
        address: "10.0.0.2:80",
        weight: 0,
        role: "down" as const,
        health: { state: "down" as const, since: "2026-01-01T00:00:01.000Z", reason: "connection refused" },
      },
    ],
    ...(failOpen ? { failOpen: "every endpoint is down by health check" } : {}),
  });
  const text = (failOpen: boolean) =>
    formatStatus(view({ servers: [{ domain: "a.test", port: 80, routes: [route(failOpen)] }] }));
  test("shows each endpoint's verdict, since and why", () =>
    expect(text(false)).toContain(
      "10.0.0.1:80 w1 [check up], 10.0.0.2:80 w0 down [down by check since 2026-01-01 00:00:01Z: connection refused]",
    ));
  test("a route failing open is a warning", () =>
    expect(text(true)).toMatch(/warning +health check +a\.test:80\/ +every endpoint is down by health check/));
});

describe("nginx-lb status: outlier ejection", () => {
  const ejected = {
    state: "ejected" as const,
    since: "2026-01-01T00:00:01.000Z",
    until: "2026-01-01T00:00:31.000Z",
    reason: "5 failed requests in a row (last: answered 500); ejected for 30 s",
  };
  const endpoints = [
    { address: "10.0.0.1:80", weight: 1, role: "primary" as const },
    { address: "10.0.0.2:80", weight: 1, role: "primary" as const, ejected },
  ];
  const route = () => ({
    prefix: "/",
    label: "a.test:80/",
    upstream: "nlb_x",
    backend: "a-s:80",
    backendPath: "/",
    endpoints,
    traffic: null,
  });
  test("shows an ejected endpoint with since, until and why", () =>
    expect(formatStatus(view({ servers: [{ domain: "a.test", port: 80, routes: [route()] }] }))).toContain(
      "10.0.0.1:80 w1, 10.0.0.2:80 w1 [ejected by traffic since 2026-01-01 00:00:01Z until 2026-01-01 00:00:31Z: " +
        "5 failed requests in a row (last: answered 500); ejected for 30 s]",
    ));
});
