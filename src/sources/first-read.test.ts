import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeTlsInspector } from "../tls/inspect.js";
import { readServicesInWorker, stillCurrent } from "./first-read.js";
import { readServicesText } from "./services-text.js";

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nlb-first-read-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const server = (i: number, port = 8000) => ({
  domain_name: `s${i}.example.test`,
  frontend_port: port,
  routes: [{ url: "/", app: "shop", service: `web${i}`, port: 8080, backend_path: "/" }],
});
const files = {
  clean: JSON.stringify({ version: "0.1", servers: [server(0), server(1)] }, null, 2),
  // Two servers claim one domain and port, and a key repeats: errors, worded by the whole read.
  invalid: `{"version": "0.1", "servers": [${JSON.stringify(server(0))}, ${JSON.stringify(server(0))}], "version": "0.1"}`,
};

describe("services.json's first read on a worker thread", () => {
  for (const [what, text] of Object.entries(files))
    it(`equals the read on this thread (${what} file), with the bytes it read`, async () => {
      const file = join(dir, `${what}.json`);
      await writeFile(file, text);
      const first = await readServicesInWorker(file, 0)();
      expect(first).not.toBeNull();
      expect(Buffer.from(first?.bytes ?? []).toString("utf8")).toBe(text);
      expect(first?.read).toEqual(readServicesText(text, null, { inspectTls: nodeTlsInspector }));
      expect(await stillCurrent(file, first)).toEqual(first?.read);
    });

  it("is not taken once the file changed, and is null for a file it cannot read", async () => {
    const file = join(dir, "changing.json");
    await writeFile(file, files.clean);
    const first = await readServicesInWorker(file, 0)();
    expect(first).not.toBeNull();
    // Same size, one byte apart: only the bytes tell.
    await writeFile(file, files.clean.replace("s1.example", "s2.example"));
    expect(await stillCurrent(file, first)).toBeNull();
    await rm(file);
    expect(await stillCurrent(file, first)).toBeNull();
    expect(await readServicesInWorker(join(dir, "missing.json"), 0)()).toBeNull();
  });

  it("is not started for a file smaller than the worker's own start is worth", async () => {
    const file = join(dir, "small.json");
    await writeFile(file, files.clean);
    expect(await readServicesInWorker(file)()).toBeNull();
    const take = readServicesInWorker(file, files.clean.length);
    expect(await take()).not.toBeNull();
    // Taken once: the handle keeps nothing of the read.
    expect(await take()).toBeNull();
  });
});
