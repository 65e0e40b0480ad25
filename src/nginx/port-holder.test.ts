import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { describeHolder, findPortHolder, parseProcNetTcp } from "./port-holder.js";

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4699 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2C4 0100007F:4699 01 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 20 4 30 10 -1
   2: garbage
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 778 1 0000000000000000 100 0 0 10 0
`;

describe("parseProcNetTcp", () => {
  it("lists listening sockets only, with address, port, uid and inode", () => {
    expect(parseProcNetTcp(TCP)).toEqual([{ address: "127.0.0.1", port: 18073, uid: 1000, inode: 123456 }]);
  });

  it("decodes IPv6 addresses", () => {
    expect(parseProcNetTcp(TCP6)).toEqual([
      { address: "[::1]", port: 8080, uid: 0, inode: 777 },
      { address: "[::]", port: 80, uid: 33, inode: 778 },
    ]);
  });
});

describe("findPortHolder", () => {
  it("names this process as the holder of a port it listens on", async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    try {
      const h = await findPortHolder(port);
      expect(h).toMatchObject({ port, pid: process.pid });
      expect(describeHolder(h!)).toMatch(new RegExp(`^held by pid ${process.pid} \\(.+\\)$`));
    } finally {
      srv.close();
    }
  });

  it("is null for a port nothing listens on", async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    await new Promise((r) => srv.close(r));
    expect(await findPortHolder(port)).toBeNull();
  });
});
