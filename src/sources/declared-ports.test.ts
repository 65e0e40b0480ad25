import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/nginx.js";
import { declaredPorts } from "./declared-ports.js";

describe("declaredPorts", () => {
  it("takes every frontend and TLS port of the file, valid or not, and the saved table's", async () => {
    const file = join(await tempDir("nginx-lb-ports-"), "services.json");
    await writeFile(
      file,
      '{"servers":[{"frontend_port": 8080,"ssl_port":8443},{"frontend_port":"x"},{"frontend_port":9001}',
    );
    const saved = { servers: [{ domain: "a.test", port: 7000, routes: [] }] };
    expect([...(await declaredPorts(file, saved))].sort()).toEqual([7000, 8080, 8443, 9001]);
  });

  it("reads the ports of servers held as JSON text (the state dir's copy of a table in etcd)", async () => {
    const file = join(await tempDir("nginx-lb-ports-"), "services-etcd.json");
    const value = JSON.stringify({ domain_name: "a.test", frontend_port: 8081, ssl_port: 8444, routes: {} });
    await writeFile(file, JSON.stringify({ version: 1, entries: [{ key: "/t/a.test:8081", value }] }));
    expect([...(await declaredPorts(file, undefined))].sort()).toEqual([8081, 8444]);
  });

  it("an unreadable file adds nothing", async () => {
    expect([...(await declaredPorts("/nonexistent/services.json", undefined))]).toEqual([]);
  });
});
