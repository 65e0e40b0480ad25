import { describe, expect, test } from "vitest";
import { resolveRunConfig } from "./run-config.js";

const NOT_ROOT = { uid: 1000, passwdFile: "/nonexistent", groupFile: "/nonexistent" };
const paths = async (flags: Parameters<typeof resolveRunConfig>[0]) => {
  const r = await resolveRunConfig(flags, {}, NOT_ROOT);
  return r.ok ? r.value.controller.servicesEtcdPrefix : r.errors.map((e) => e.path + ": " + e.message).join("\n");
};
const etcd = { etcdEndpoints: "http://127.0.0.1:2379" };

describe("run --services-etcd-prefix", () => {
  test("absent: routes from the file", async () => expect(await paths(etcd)).toBeUndefined());
  test("given with etcd: the prefix", async () =>
    expect(await paths({ ...etcd, servicesEtcdPrefix: "/lb/services" })).toBe("/lb/services"));
  test("without etcd endpoints: refused", async () =>
    expect(await paths({ servicesEtcdPrefix: "/lb/services" })).toMatch(
      /^--services-etcd-prefix: needs --etcd-endpoints/,
    ));
  test("with the v2 API: refused", async () =>
    expect(await paths({ ...etcd, etcdApi: "v2", servicesEtcdPrefix: "/lb/services" })).toMatch(/needs the v3 API/));
  test("a relative or trailing-slash prefix: refused", async () => {
    expect(await paths({ ...etcd, servicesEtcdPrefix: "lb/services" })).toMatch(/an absolute etcd key/);
    expect(await paths({ ...etcd, servicesEtcdPrefix: "/lb/services/" })).toMatch(/without a trailing/);
  });
});
