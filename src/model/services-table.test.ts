import { describe, expect, it } from "vitest";
import { buildServicesTable, type TableEntry } from "./services-table.js";

const P = "/lb/services";
const srv = (domain: string, port: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ domain_name: domain, frontend_port: port, routes: { "/": { app: "a", service: "b" } }, ...extra });
const e = (name: string, value: string, createRevision: number): TableEntry => ({
  key: `${P}/${name}`,
  value,
  createRevision,
});
const table = (entries: TableEntry[], last?: ReturnType<typeof buildServicesTable>["valid"]) =>
  buildServicesTable(P, entries, last);
const names = (t: ReturnType<typeof table>) => t.services.servers.map((s) => `${s.domain}:${s.port}`);
const rejected = (t: ReturnType<typeof table>) => t.rejected.map((r) => [r.key, r.problems.map((p) => p.code)]);
// A fake PEM passes the shape check; without an inspector no certificate is parsed.
const tls = (port: number) => ({
  ssl_port: port,
  ssl_certificate: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
  ssl_certificate_key: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
});

describe("buildServicesTable", () => {
  it("a value that is not JSON is never quoted (it may hold a private key)", () =>
    expect(table([e("a.test:80", "SECRET-----BEGIN PRIVATE KEY-----", 2)]).rejected[0]?.problems[0]?.message).toBe(
      "the value is not valid JSON (Unexpected token)",
    ));
  it("valid keys: every server, in key order", () =>
    expect(names(table([e("b.test:80", srv("b.test", 80), 2), e("a.test:80", srv("a.test", 80), 3)]))).toEqual([
      "a.test:80",
      "b.test:80",
    ]));
  it("no keys: no servers, nothing rejected", () =>
    expect(table([])).toMatchObject({ services: { servers: [] }, rejected: [] }));
  it("a value that is not JSON is rejected, naming the key", () =>
    expect(rejected(table([e("a.test:80", "{", 2)]))).toEqual([[`${P}/a.test:80`, ["invalid_json"]]]));
  it("a JSON array is rejected", () =>
    expect(rejected(table([e("a.test:80", "[]", 2)]))[0]?.[1]).toEqual(["invalid_type"]));
  it("errors carry the key, then the path inside the value", () =>
    expect(
      table([e("a.test:80", srv("a.test", 80, { routes: { "/": { app: "a", service: "b", port: 0 } } }), 2)])
        .rejected[0]?.problems[0]?.path,
    ).toBe(`${P}/a.test:80.routes["/"].port`));
  it("a key whose name is not its domain:port is rejected", () =>
    expect(rejected(table([e("b.test:80", srv("a.test", 80), 2)]))).toEqual([[`${P}/b.test:80`, ["key_mismatch"]]]));
  it("a key named with an upper-case domain is the same server", () =>
    expect(names(table([e("A.test:80", srv("a.test", 80), 2)]))).toEqual(["a.test:80"]));
  it("a bad key does not touch the others", () =>
    expect(names(table([e("a.test:80", "nope", 2), e("b.test:80", srv("b.test", 80), 3)]))).toEqual(["b.test:80"]));
  it("a bad key keeps its last valid version", () => {
    const before = table([e("a.test:80", srv("a.test", 80), 2)]);
    const after = table([e("a.test:80", "nope", 2)], before.valid);
    expect([names(after), after.rejected[0]?.keptLastValid]).toEqual([["a.test:80"], true]);
  });
  it("a key deleted and created again with a bad value is absent", () => {
    const before = table([e("a.test:80", srv("a.test", 80), 2)]);
    expect(names(table([e("a.test:80", "nope", 9)], before.valid))).toEqual([]);
  });
  it("same domain on the same port twice (TLS port of one, key of another): the older key wins", () => {
    const t = table([e("a.test:443", srv("a.test", 443), 5), e("a.test:80", srv("a.test", 80, tls(443)), 3)]);
    expect([names(t), rejected(t)]).toEqual([
      ["a.test:80"],
      [[`${P}/a.test:443`, ["duplicate_server", "port_conflict"]]],
    ]);
  });
  it("a port plain for one key and TLS for another: the older key wins", () => {
    const t = table([e("a.test:80", srv("a.test", 80, tls(8443)), 7), e("b.test:8443", srv("b.test", 8443), 4)]);
    expect([names(t), rejected(t)]).toEqual([["b.test:8443"], [[`${P}/a.test:80`, ["port_conflict"]]]]);
  });
  it("the winner does not depend on the order of the entries", () => {
    const x = e("a.test:80", srv("a.test", 80, tls(8443)), 7);
    const y = e("b.test:8443", srv("b.test", 8443), 4);
    expect(table([x, y])).toEqual(table([y, x]));
  });
  it("two TLS servers share a TLS port", () =>
    expect(
      names(table([e("a.test:80", srv("a.test", 80, tls(443)), 2), e("b.test:80", srv("b.test", 80, tls(443)), 3)])),
    ).toEqual(["a.test:80", "b.test:80"]));
  it("unknown fields are warnings with the key's path", () =>
    expect(table([e("a.test:80", srv("a.test", 80, { colour: 1 }), 2)]).warnings[0]?.path).toBe(
      `${P}/a.test:80.colour`,
    ));
});
