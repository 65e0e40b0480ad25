import { describe, expect, it } from "vitest";
import type { PushedEndpoint } from "../model/plan.js";
import { Table } from "../model/table.js";
import type { CertTable, SiteCert } from "./certs-push.js";
import { newPortsFirst, type NewPortsFirst } from "./new-ports.js";

const ep = (ip: string) => [{ ip, port: 80, weight: 1, backup: false }];
const cert = (port: number, name: string): [string, SiteCert] => [
  `${port} ${name}`,
  { port, name, id: `${port}${name}`, certificate: "c", key: "k" },
];
/** The cases write tables as records; newPortsFirst takes and gives Tables. */
const tables = (routes: Record<string, string>, certs: CertTable | null, sets: Record<string, PushedEndpoint[]>) => ({
  routes: Table.of(routes),
  certs,
  sets: Table.of<readonly PushedEndpoint[]>(sets),
});
const held = tables({ "80 a.test": "/ u1 / a-b;", "443 a.test": "/ u1 / a-b;" }, new Map([cert(443, "a.test")]), {
  u1: ep("10.0.0.1"),
});
const records = (first: NewPortsFirst | null) =>
  first && { ...first, routes: first.routes.toRecord(), sets: first.sets.toRecord() };

describe("newPortsFirst", () => {
  it("no new port: nothing first", () =>
    expect(newPortsFirst(held, { ...tables({ "80 a.test": "/x u1 / a-b;" }, null, {}), sets: held.sets })).toBeNull());
  it("a removed port only: nothing first", () => expect(newPortsFirst(held, tables({}, null, {}))).toBeNull());
  it("a new port: its servers and new sets added to what is held; held ports' changes wait for the reload", () =>
    expect(
      records(
        newPortsFirst(
          held,
          tables({ "80 a.test": "/x u1 / a-b;", "81 b.test": "/ u2 / c-d;" }, null, {
            u1: ep("10.0.0.9"),
            u2: ep("10.0.0.2"),
          }),
        ),
      ),
    ).toEqual({
      routes: { "80 a.test": "/ u1 / a-b;", "443 a.test": "/ u1 / a-b;", "81 b.test": "/ u2 / c-d;" },
      added: ["81 b.test"],
      certs: null,
      sets: { u1: ep("10.0.0.1"), u2: ep("10.0.0.2") },
      upstreams: ["u2"],
    }));
  it("a new TLS port: its certificates added to the held ones, a held port's new certificate not", () =>
    expect(
      newPortsFirst(
        held,
        tables(
          { "80 a.test": "", "8443 c.test": "" },
          new Map([cert(443, "a.test"), cert(443, "z.test"), cert(8443, "c.test")]),
          {},
        ),
      )?.certs,
    ).toEqual(new Map([cert(443, "a.test"), cert(8443, "c.test")])));
  it("no certificates known to be held: none first", () =>
    expect(
      newPortsFirst({ ...held, certs: null }, tables({ "8443 c.test": "" }, new Map([cert(8443, "c.test")]), {}))
        ?.certs,
    ).toBeNull());
});
