import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizePrefix } from "../../src/model/grammar.js";
import type { Desired } from "../../src/render/index.js";
import { loopbackIps, startBackends, type BackendPool, type Echo } from "../helpers/backends.js";
import { get } from "../helpers/http.js";
import { mustDesired } from "../helpers/model.js";
import { cleanupNginx, freePort, serveNginx, type ServedNginx } from "../helpers/nginx.js";

// Model-based: generated route tables, served by the real nginx, asked generated paths; what each backend receives
// must be what the documented prefix rules say (longest prefix wins, prefix replaced by backend_path, query kept).
const RUNS = Number(process.env["PROPERTY_RUNS"] ?? 12);
const IPS = loopbackIps(5, 40);
let pool: BackendPool;
let ngx: ServedNginx;
let port: number;

type Route = { key: string; backendPath: string };

const desired = (routes: readonly Route[]): Desired =>
  mustDesired(
    {
      servers: [
        {
          domain_name: "m.test",
          frontend_port: port,
          routes: Object.fromEntries(
            routes.map((r, i) => [r.key, { app: `r${i}`, service: "s", port: pool.port, backend_path: r.backendPath }]),
          ),
        },
      ],
    },
    Object.fromEntries(routes.map((_, i) => [`r${i}-s`, { [IPS[i] ?? ""]: { weight: 1 } }])),
  );

/** The documented rules, written independently of the renderer. */
function expected(routes: readonly Route[], path: string): { backend: string; path: string } | null {
  let best: { i: number; prefix: string } | null = null;
  routes.forEach((r, i) => {
    const p = normalizePrefix(r.key);
    const hit = p === "/" || path === p || path.startsWith(`${p}/`);
    if (hit && (best === null || p.length > best.prefix.length)) best = { i, prefix: p };
  });
  if (best === null) return null;
  const { i, prefix } = best as { i: number; prefix: string };
  const bp = routes[i]?.backendPath ?? "/";
  const slash = bp.endsWith("/") ? bp : `${bp}/`;
  let out: string;
  if (prefix === "/") out = slash + path.slice(1);
  else if (path === prefix) out = bp.length > 1 && bp.endsWith("/") ? bp.slice(0, -1) : bp;
  else out = slash + path.slice(prefix.length + 1);
  return { backend: IPS[i] ?? "", path: out };
}

beforeAll(async () => {
  pool = await startBackends(IPS);
  port = await freePort();
  ngx = await serveNginx({ ...desired([{ key: "/", backendPath: "/" }]), workers: 1 });
});

afterAll(async () => {
  await cleanupNginx();
  await pool.close();
});

const segment = fc.constantFrom(
  "a",
  "b",
  "api",
  "v2",
  "x.y",
  "~u",
  "a-b",
  "c_d",
  "e:f",
  "g@h",
  "i=j",
  "k,l",
  "m+n",
  "o*p",
  "q!",
);
const path = (max: number) => fc.array(segment, { maxLength: max }).map((s) => `/${s.join("/")}`);
const route = fc.record({
  key: fc.tuple(path(3), fc.boolean()).map(([p, slash]) => (slash && p !== "/" ? `${p}/` : p)),
  backendPath: fc.tuple(path(2), fc.boolean()).map(([p, slash]) => (slash && p !== "/" ? `${p}/` : p)),
});
const table = fc.uniqueArray(route, { minLength: 1, maxLength: IPS.length, selector: (r) => normalizePrefix(r.key) });
const request = fc.tuple(path(4), fc.constantFrom("", "/", "x"), fc.constantFrom("", "?q=1", "?a=%2F&b=c+d&&e"));

describe("generated route tables through nginx", () => {
  it("every request reaches the route and path the prefix rules name", async () => {
    await fc.assert(
      fc.asyncProperty(table, fc.array(request, { minLength: 8, maxLength: 8 }), async (routes, requests) => {
        await ngx.apply(desired(routes));
        for (const [p, suffix, query] of requests) {
          const reqPath = p === "/" && suffix === "/" ? "/" : `${p}${suffix}`;
          const want = expected(routes, reqPath);
          const r = await get(`http://127.0.0.1:${port}${reqPath}${query}`, { host: "m.test" });
          const what = `${reqPath}${query} with ${JSON.stringify(routes)}`;
          if (want === null) {
            expect(r.status, what).toBe(404);
            continue;
          }
          expect(r.status, what).toBe(200);
          expect(r.json<Echo>(), what).toMatchObject({ backend: want.backend, url: `${want.path}${query}` });
        }
      }),
      { numRuns: RUNS },
    );
  }, 120_000);
});
