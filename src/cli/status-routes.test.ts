import { describe, expect, test } from "vitest";
import type { StatusView } from "../admin/view.js";
import { formatStatus, unhealthy } from "./status.js";

const view = (routes: StatusView["routes"]): StatusView => ({
  now: "2026-01-01T00:00:00.000Z",
  ready: { ready: true, why: "nginx runs generation abc" },
  startedAt: "2026-01-01T00:00:00.000Z",
  services: { file: "etcd:/lb/services", valid: true, errors: [], warnings: [] },
  routes,
  registry: { kind: "etcd-v3", connected: true, origin: "etcd revision 9", warnings: [], valid: true, errors: [] },
  nginx: { running: true, pid: 1, generation: "abc" },
  counters: { applied: 1, failed: 0, unchanged: 0, reloads: 0, pushes: 0 },
  persist: null,
  lastSuccessAt: null,
  secondsSinceLastSuccess: null,
  servers: [],
  applies: [],
});
const etcd = (rejected: Extract<NonNullable<StatusView["routes"]>, { kind: "etcd" }>["rejected"]) =>
  view({
    kind: "etcd",
    prefix: "/lb/services",
    revision: 42,
    connected: true,
    origin: "etcd revision 42",
    keys: 3,
    rejected,
  });
const bad = {
  key: "/lb/services/a.test:80",
  problems: [{ code: "invalid_json", path: "/lb/services/a.test:80", message: "Unexpected end of JSON input" }],
  keptLastValid: true,
};

describe("nginx-lb status: routes from etcd", () => {
  test("the table names the prefix and revision", () =>
    expect(formatStatus(etcd([]))).toMatch(/routes\s+etcd\s+\/lb\/services at revision 42: 3 key\(s\), 0 rejected/));
  test("every rejected key is a problem row with its reason", () =>
    expect(formatStatus(etcd([bad]))).toMatch(
      /rejected\s+etcd key \(last valid serves\)\s+\/lb\/services\/a.test:80\s+Unexpected end/,
    ));
  test("a rejected key is exit 1, naming it", () =>
    expect(unhealthy(etcd([bad]))).toBe("1 routing key(s) under /lb/services rejected (/lb/services/a.test:80)"));
  test("no rejected key: healthy", () => expect(unhealthy(etcd([]))).toBeNull());
  test("routes from a file: the routing file row as before", () =>
    expect(formatStatus(view({ kind: "file", file: "/etc/x.json" }))).toMatch(
      /routing file\s+valid\s+etcd:\/lb\/services/,
    ));
});
