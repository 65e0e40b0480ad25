import { afterAll, describe, expect, it } from "vitest";
import { parseServices } from "../../src/model/services.js";
import { renderNginxConf } from "../../src/render/index.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";

afterAll(cleanupNginx);

describe("many sites", () => {
  it("10,000 domains (some near the 253-character limit, some wildcards) load in nginx -t", async () => {
    const long = (i: number) =>
      `${"a".repeat(60)}.${"b".repeat(60)}.${"c".repeat(60)}.${"d".repeat(50)}${i}.example.com`;
    const servers = Array.from({ length: 10_000 }, (_, i) => ({
      domain_name: i % 1000 === 0 ? long(i) : i % 7 === 0 ? `*.w${i}.example.com` : `site${i}.example.com`,
      frontend_port: i % 2 === 0 ? 80 : 8080,
      routes: { "/": { app: `app${i}`, service: "web" }, "/api": { app: `app${i}`, service: "api", port: 8000 } },
    }));
    const parsed = parseServices({ servers });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(Math.max(...parsed.value.servers.map((s) => s.domain.length))).toBeGreaterThan(240);
    // Every other site has endpoints, so upstream blocks and 503 routes are both present at scale.
    const backends: Record<string, Record<string, { weight: number }>> = {};
    for (let i = 0; i < 10_000; i += 2)
      backends[`app${i}-web`] = { [`10.${(i >> 8) & 255}.${i & 255}.1`]: { weight: 1 } };
    const dir = await tempDir("nginx-lb-scale-");
    const started = performance.now();
    const rendered = renderNginxConf({ services: parsed.value, backends }, { dir });
    const renderMs = performance.now() - started;
    const t = await checkConfig(rendered, dir);
    expect(t.ok, t.output).toBe(true);
    // nginx's default hash sizes fail here with "could not build server_names_hash"; the renderer must size them.
    expect(t.output).not.toMatch(/server_names_hash|could not build/);
    // Rendering is a pure string build; seconds here would mean something quadratic crept in.
    expect(renderMs).toBeLessThan(5_000);
  });
});
