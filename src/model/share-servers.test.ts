import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseServices, type Services } from "./services.js";
import { shareServers } from "./share-servers.js";

const server = fc.record({
  domain_name: fc.constantFrom("a.test", "b.test", "c.test"),
  frontend_port: fc.constantFrom(80, 8080),
  routes: fc.dictionary(
    fc.constantFrom("/", "/p", "/q"),
    fc.record(
      {
        app: fc.constantFrom("a", "b"),
        service: fc.constant("s"),
        backend_path: fc.constantFrom("/", "/x"),
        health_check: fc.record({ path: fc.constantFrom("/h", "/k") }),
      },
      { requiredKeys: ["app", "service"] },
    ),
    { maxKeys: 3 },
  ),
});
const model = fc
  .uniqueArray(server, { selector: (s) => `${s.domain_name} ${s.frontend_port}`, maxLength: 4 })
  .map((servers): Services => {
    const r = parseServices({ servers });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  });

/**
 * A next model as a source that keeps unchanged servers' objects emits it (the services file's incremental read): some
 * of `before`'s servers by reference, the rest from `fresh`, in any order, each (domain, port) once.
 */
const partlyShared = fc
  .tuple(model, model, fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 8 }))
  .map(([before, fresh, keep, order]) => {
    const kept = before.servers.filter((_, i) => keep[i]);
    const key = (s: Services["servers"][number]) => `${s.domain} ${s.port}`;
    const taken = new Set(kept.map(key));
    const all = [...kept, ...fresh.servers.filter((s) => !taken.has(key(s)))];
    const rank = all.map((s, i) => ({ s, r: order[i] ?? i }));
    rank.sort((x, y) => x.r - y.r);
    return { before, after: { servers: rank.map((x) => x.s) } as Services };
  });

describe("shareServers", () => {
  it("equals the new model; its servers are the old objects exactly where equal; the old model when all are", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.tuple(model, model).map(([before, after]) => ({ before, after })),
          partlyShared,
        ),
        ({ before, after }) => {
          const shared = shareServers(before, after);
          expect(shared).toEqual(after);
          const equalToOld = (s: Services["servers"][number]) =>
            before.servers.some((o) => JSON.stringify(o) === JSON.stringify(s));
          shared.servers.forEach((s, i) => {
            const fromNext = after.servers[i];
            if (fromNext && equalToOld(fromNext)) expect(before.servers).toContain(s);
            else expect(s).toBe(fromNext);
          });
          // Parsed twice, the same file is the same model.
          const again = shareServers(shared, JSON.parse(JSON.stringify(shared)) as Services);
          expect(again).toBe(shared);
          expect(shared === before).toBe(JSON.stringify(before) === JSON.stringify(after));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("takes the new model as it is without a previous one", () => {
    const r = parseServices({ servers: [] });
    if (!r.ok) throw new Error("invalid");
    expect(shareServers(null, r.value)).toBe(r.value);
  });
});
