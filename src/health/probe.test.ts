import { createServer as createHttp, type Server } from "node:http";
import { createServer as createTcp, type AddressInfo, type Socket } from "node:net";
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

/** A raw TCP server on a free loopback port that answers each connection with `answer`. */
async function answering(answer: (socket: Socket) => unknown): Promise<ReturnType<typeof createTcp>> {
  const server = createTcp((socket) => {
    socket.on("error", () => undefined);
    void answer(socket);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

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
  it("reads a status line that arrives split across TCP chunks", async () => {
    const server = await answering(async (socket) => {
      for (const part of ["HT", "TP/1.1 2", "03 Non-Auth", "oritative\r", "\nContent-Length: 0\r\n\r\n"]) {
        socket.write(part);
        await new Promise((r) => setTimeout(r, 20));
      }
      socket.end();
    });
    try {
      expect(await probe("127.0.0.1", port(server), check({}))).toEqual({ ok: true, reason: "status 203" });
    } finally {
      server.close();
    }
  });
  it("fails an answer that is not HTTP, and a connection closed before a status line", async () => {
    const ssh = await answering((socket) => socket.end("SSH-2.0-OpenSSH_9.6\r\n"));
    const closed = await answering((socket) => socket.end("HTTP/1.1 20"));
    try {
      expect(await probe("127.0.0.1", port(ssh), check({}))).toEqual({ ok: false, reason: "not an HTTP answer" });
      expect(await probe("127.0.0.1", port(closed), check({}))).toEqual({
        ok: false,
        reason: "connection closed before a status line",
      });
    } finally {
      ssh.close();
      closed.close();
    }
  });
  it("fails a status line that starts in time and ends after the timeout", async () => {
    const slow = await answering((socket) => {
      socket.write("HTTP/1.1 200");
      const t = setTimeout(() => socket.end(" OK\r\n\r\n"), 600);
      socket.once("close", () => clearTimeout(t));
    });
    try {
      const t0 = Date.now();
      expect(await probe("127.0.0.1", port(slow), check({ timeout: "200ms" }))).toEqual({
        ok: false,
        reason: "timed out after 200ms",
      });
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      slow.close();
    }
  });
  it("sends one minimal GET with the fixed Host and closes", async () => {
    let request = "";
    const server = await answering((socket) => {
      socket.setEncoding("latin1");
      socket.on("data", (d: string) => {
        request += d;
        if (request.includes("\r\n\r\n")) socket.end("HTTP/1.1 200 OK\r\n\r\n");
      });
    });
    try {
      expect((await probe("127.0.0.1", port(server), check({ path: "/h?x=1" }))).ok).toBe(true);
      expect(request).toBe(
        `GET /h?x=1 HTTP/1.1\r\nHost: ${PROBE_HOST}\r\nUser-Agent: ${PROBE_HOST}\r\nConnection: close\r\n\r\n`,
      );
    } finally {
      server.close();
    }
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
