import { describe, expect, it } from "vitest";
import { controlPortReserved, reservedPortProblems, type ReservedPort } from "./reserved-ports.js";
import type { Server, Services } from "./services.js";

const server = (port: number, sslPort?: number): Server => ({
  domain: "a.test",
  port,
  ...(sslPort !== undefined ? { tls: { port: sslPort, certificate: "c", key: "k" } } : {}),
  routes: [],
});
const table = (...servers: Server[]): Services => ({ servers });
const control: ReservedPort = { port: 9000, use: "the control port", remedy: "pick another" };

describe("reservedPortProblems", () => {
  it.each([
    ["no reserved port", table(server(9000)), [], []],
    ["no server claims it", table(server(8080, 8443)), [control], []],
    ["a frontend port", table(server(8080), server(9000)), [control], ["servers[1].frontend_port"]],
    ["a TLS port", table(server(8080, 9000)), [control], ["servers[0].ssl_port"]],
    [
      "every claim",
      table(server(9000), server(9000, 8443)),
      [control],
      ["servers[0].frontend_port", "servers[1].frontend_port"],
    ],
  ] as const)("%s", (_, services, reserved, paths) => {
    expect(reservedPortProblems(services, reserved).map((p) => p.path)).toEqual(paths);
  });

  it("says which port, what holds it and what to do", () => {
    expect(reservedPortProblems(table(server(9000)), [control])).toEqual([
      {
        code: "reserved_port",
        path: "servers[0].frontend_port",
        message: "port 9000 is the control port: pick another",
      },
    ]);
  });
});

describe("controlPortReserved", () => {
  it.each([
    [undefined, true],
    ["*", true],
    ["0.0.0.0", true],
    ["127.0.0.1", true],
    ["127.0.0.10", false],
    ["10.0.0.5", false],
    ["::1", false],
    ["::", false],
  ] as const)("--listen-host %s: reserved %s", (host, reserved) => {
    expect(controlPortReserved(9000, host, false).map((r) => r.port)).toEqual(reserved ? [9000] : []);
  });

  it("a requested port's remedy names --control-port; a chosen one's, a restart", () => {
    expect(controlPortReserved(9000, undefined, true)[0]?.remedy).toMatch(/another --control-port/);
    expect(controlPortReserved(9000, undefined, false)[0]?.remedy).toMatch(/restart nginx-lb/);
  });
});
