import { createServer as createHttp, type Server } from "node:http";
import { createServer as createTcp, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServices, type HealthCheck } from "../model/services.js";
import { PROBE_HOST, probe } from "./probe.js";

function check(block: object): HealthCheck {
  const r = parseServices({
    servers: [{ domain_name: "x.test", routes: { "/": { app: "a", service: "s", health_check: block } } }],
  });
  const c = r.ok ? r.value.servers[0]?.routes[0]?.primary.healthCheck : undefined;
  if (!c) throw new Error("bad check");
  return c;
}

const hosts: string[] = [];
let http: Server;
let hung: ReturnType<typeof createTcp>;
const port = (s: { address(): unknown }) => (s.address() as AddressInfo).port;

beforeAll(async () => {
  http = createHttp((req, res) => {
    hosts.push(`${req.headers.host} ${req.url}`);
    res.statusCode = req.url === "/healthz" ? 200 : req.url === "/teapot" ? 418 : 500;
    res.end("x");
  });
  // Accepts connections and never answers.
  hung = createTcp(() => undefined);
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => hung.listen(0, "127.0.0.1", r));
});
afterAll(() => {
  http.closeAllConnections();
  http.close();
  hung.close();
});

describe("probe", () => {
  it("passes a 200 and sends the fixed Host", async () => {
    expect(await probe("127.0.0.1", port(http), check({}))).toEqual({ ok: true, reason: "status 200" });
    expect(hosts).toContain(`${PROBE_HOST} /healthz`);
  });
  it("fails a status outside expect", async () =>
    expect(await probe("127.0.0.1", port(http), check({ path: "/x" }))).toEqual({
      ok: false,
      reason: "status 500 (expected 200-399)",
    }));
  it("passes a status inside expect", async () =>
    expect((await probe("127.0.0.1", port(http), check({ path: "/teapot", expect: "200,418" }))).ok).toBe(true));
  it("fails a refused connection", async () => {
    const free = createTcp();
    await new Promise<void>((r) => free.listen(0, "127.0.0.1", r));
    const p = port(free);
    await new Promise<void>((r) => free.close(() => r()));
    expect(await probe("127.0.0.1", p, check({}))).toEqual({ ok: false, reason: "connection refused" });
    expect(await probe("127.0.0.1", p, check({ type: "tcp" }))).toEqual({ ok: false, reason: "connection refused" });
  });
  it("fails a hung endpoint within the timeout, and tcp passes it (it accepts)", async () => {
    const t0 = Date.now();
    expect(await probe("127.0.0.1", port(hung), check({ timeout: "200ms" }))).toEqual({
      ok: false,
      reason: "timed out after 200ms",
    });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((await probe("127.0.0.1", port(hung), check({ type: "tcp" }))).ok).toBe(true);
  });
});
