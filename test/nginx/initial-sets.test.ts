import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendSet } from "../../src/model/backends.js";
import type { Services } from "../../src/model/services.js";
import { pushBody, pushedVersion } from "../../src/nginx/endpoints-push.js";
import { writeInitialSets } from "../../src/nginx/initial-sets.js";
import { INITIAL_SETS_FILE } from "../../src/render/dynamic.js";
import { bindRoutes } from "../../src/render/index.js";
import { type Backend, startAddressBackends as startBackends } from "../helpers/backends.js";
import { hostGet as get } from "../helpers/http.js";
import { services } from "../helpers/model.js";
import { serveNginx } from "../helpers/nginx.js";

const HOST = "initial.test";
const IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

let port = 0;
let backends: Backend[] = [];

const model = (frontendPort: number) =>
  services(HOST, frontendPort, [
    { prefix: "/", app: "app", service: "web", port },
    { prefix: "/other", app: "other", service: "web", port },
  ]);
const only = (ip: string, other = "127.0.0.4"): BackendSet => ({
  "app-web": { [ip]: { weight: 1 } },
  "other-web": { [other]: { weight: 1 } },
});
const setsOf = (routes: Services, b: BackendSet) => pushBody(0, bindRoutes(routes, b)).upstreams;

/**
 * Starts dynamic nginx with `write` placing the start-up sets file first (the state nginx-lb leaves behind), and
 * without the controller's first push: what the new master serves is what it loaded by itself.
 */
const start = (write: (dir: string, routes: Services) => Promise<unknown>) =>
  serveNginx({
    mode: "dynamic",
    services: model,
    push: false,
    before: async (dir, routes) => void (await write(dir, routes)),
  });

beforeAll(async () => {
  ({ port, backends } = await startBackends(IPS));
});

afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()));
});

describe("start-up endpoint sets (a new nginx master before the controller's first push)", () => {
  it("serves the last pushed sets on the very first request, without any push", async () => {
    const ng = await start(async (dir, routes) => {
      const out = await writeInitialSets(dir, 42, setsOf(routes, only("127.0.0.3")));
      expect(out.ok).toBe(true);
    });
    try {
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.3" });
      expect(await get(ng.port, HOST, "/other/")).toMatchObject({ status: 200, body: "127.0.0.4" });
      expect(await pushedVersion(ng.target)).toBe(42);
      expect(await ng.errorLog()).not.toMatch(/\[(error|emerg|crit)\]/);
      // The controller's push still replaces them as usual.
      await ng.push(only("127.0.0.2"));
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
    } finally {
      await ng.stop();
    }
  });

  it("leaves the dict alone on a reload: what was pushed since is newer than any file", async () => {
    const ng = await start((dir, routes) => writeInitialSets(dir, 42, setsOf(routes, only("127.0.0.3"))));
    try {
      const version = await ng.push(only("127.0.0.2"));
      // The applier keeps what it pushed in the same file: let that write land before the test replaces it.
      await ng.settled();
      await writeInitialSets(ng.dir, 99, setsOf(model(ng.port), only("127.0.0.4")));
      // No push after this reload: what the workers serve is the shared dict, never the file.
      await ng.reloadWithoutPush();
      expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
      expect(await pushedVersion(ng.target)).toBe(version);
    } finally {
      await ng.stop();
    }
  });

  const ignored: [string, (dir: string, routes: Services) => Promise<unknown>, RegExp][] = [
    [
      "a corrupt file",
      (dir) =>
        writeFile(join(dir, INITIAL_SETS_FILE), "nginx-lb-sets version=3\nnlb_zz=1.2.3.4 80 1 0;\n", { mode: 0o600 }),
      /ignoring the start-up endpoint sets in .*endpoints\.sets \(line 2: must be '<upstream>=<endpoints>'/,
    ],
    [
      "a file cut off before its end line",
      async (dir, routes) => {
        await writeInitialSets(dir, 7, setsOf(routes, only("127.0.0.3")));
        const { readFile } = await import("node:fs/promises");
        const text = await readFile(join(dir, INITIAL_SETS_FILE), "utf8");
        await writeFile(join(dir, INITIAL_SETS_FILE), text.slice(0, text.indexOf("end upstreams")));
      },
      /ignoring the start-up endpoint sets .*missing the final 'end upstreams=<n>' line/,
    ],
    [
      "an oversized file",
      (dir) => writeFile(join(dir, INITIAL_SETS_FILE), Buffer.alloc(17 * 1024 * 1024, 0x41), { mode: 0o600 }),
      /ignoring the start-up endpoint sets .*larger than 16777216 bytes/,
    ],
    [
      "a directory in its place",
      async (dir) => {
        const { mkdir } = await import("node:fs/promises");
        await mkdir(join(dir, INITIAL_SETS_FILE));
      },
      /ignoring the start-up endpoint sets .*Is a directory/,
    ],
  ];
  for (const [what, write, logged] of ignored)
    it(`ignores ${what} with an error in error.log: nginx starts, routes answer 503 until a push`, async () => {
      const ng = await start(write);
      try {
        expect(await get(ng.port, HOST, "/")).toMatchObject({
          status: 503,
          body: "no endpoint for route / (app-web)\n",
        });
        expect(await pushedVersion(ng.target)).toBeNull();
        const log = await ng.errorLog();
        expect(log).toMatch(/\[error\]/);
        expect(log).toMatch(logged);
        await ng.push(only("127.0.0.2"));
        expect(await get(ng.port, HOST, "/")).toMatchObject({ status: 200, body: "127.0.0.2" });
      } finally {
        await ng.stop();
      }
    });

  it("starts with empty routes and no error when there is no file yet", async () => {
    const ng = await start(async () => undefined);
    try {
      expect((await get(ng.port, HOST, "/")).status).toBe(503);
      expect(await ng.errorLog()).not.toMatch(/\[(error|emerg|crit)\]/);
    } finally {
      await ng.stop();
    }
  });
});
