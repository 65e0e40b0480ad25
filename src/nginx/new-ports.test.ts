import { describe, expect, it } from "vitest";
import type { SiteCert } from "./certs-push.js";
import { newPortsFirst } from "./new-ports.js";

const ep = (ip: string) => [{ ip, port: 80, weight: 1, backup: false }];
const cert = (port: number, name: string): [string, SiteCert] => [
  `${port} ${name}`,
  { port, name, id: `${port}${name}`, certificate: "c", key: "k" },
];
const held = {
  routes: { "80 a.test": "/ u1 / a-b;", "443 a.test": "/ u1 / a-b;" },
  certs: new Map([cert(443, "a.test")]),
  sets: { u1: ep("10.0.0.1") },
};

describe("newPortsFirst", () => {
  it("no new port: nothing first", () =>
    expect(newPortsFirst(held, { routes: { "80 a.test": "/x u1 / a-b;" }, certs: null, sets: held.sets })).toBeNull());
  it("a removed port only: nothing first", () =>
    expect(newPortsFirst(held, { routes: {}, certs: null, sets: {} })).toBeNull());
  it("a new port: its servers and new sets added to what is held; held ports' changes wait for the reload", () =>
    expect(
      newPortsFirst(held, {
        routes: { "80 a.test": "/x u1 / a-b;", "81 b.test": "/ u2 / c-d;" },
        certs: null,
        sets: { u1: ep("10.0.0.9"), u2: ep("10.0.0.2") },
      }),
    ).toEqual({
      routes: { "80 a.test": "/ u1 / a-b;", "443 a.test": "/ u1 / a-b;", "81 b.test": "/ u2 / c-d;" },
      added: ["81 b.test"],
      certs: null,
      sets: { u1: ep("10.0.0.1"), u2: ep("10.0.0.2") },
      upstreams: ["u2"],
    }));
  it("a new TLS port: its certificates added to the held ones, a held port's new certificate not", () =>
    expect(
      newPortsFirst(held, {
        routes: { "80 a.test": "", "8443 c.test": "" },
        certs: new Map([cert(443, "a.test"), cert(443, "z.test"), cert(8443, "c.test")]),
        sets: {},
      })?.certs,
    ).toEqual(new Map([cert(443, "a.test"), cert(8443, "c.test")])));
  it("no certificates known to be held: none first", () =>
    expect(
      newPortsFirst(
        { ...held, certs: null },
        { routes: { "8443 c.test": "" }, certs: new Map([cert(8443, "c.test")]), sets: {} },
      )?.certs,
    ).toBeNull());
});
