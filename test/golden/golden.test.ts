/**
 * Renderer golden cases: each `*.case` file is comment lines (`#`), the input as JSON
 * (`{ "services": ..., "backends": ... }`), the separator line below, then the expected nginx.conf. A new case is a new
 * file; `UPDATE_GOLDEN=1 npx vitest run test/golden` rewrites the expected part from the renderer, to review in the diff.
 * Every expected config must also pass the real `nginx -t`.
 *
 * A case renders in reload endpoints mode unless its first line is `# mode: dynamic` (what production runs when the
 * Lua module is there). Its expected text is rendered with stand-in Lua modules, so an edit to the Lua does not
 * rewrite the golden file (only the generation hash would change); `nginx -t` runs on the real modules, whose
 * init_by_lua code runs there.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { balancerLuaSource } from "../../src/nginx/lua-source.js";
import { LUA_MODULES } from "../../src/render/dynamic.js";
import { ROUTES_LUA_MODULES } from "../../src/render/routes-dynamic.js";
import { CERTS_MODULE } from "../../src/render/tls-dynamic.js";
import { renderNginxConf, type RenderOptions } from "../../src/render/index.js";
import { mustDesired } from "../helpers/model.js";
import { checkConfig, cleanupNginx, tempDir } from "../helpers/nginx.js";

export const SEPARATOR = "----- expected nginx.conf -----";
const here = dirname(fileURLToPath(import.meta.url));
const cases = readdirSync(here)
  .filter((f) => f.endsWith(".case"))
  .sort();
/** The options every golden case renders with: a production-like state dir and a control port. */
const OPTIONS: RenderOptions = { dir: "/var/lib/nginx-lb", controlPort: 9901 };
/** Dynamic cases add these; the token is a fixed stand-in for the one the controller generates. */
const DYNAMIC: Partial<RenderOptions> = {
  endpointsMode: "dynamic",
  pushToken: "0123456789abcdef0123456789abcdef",
  luaSource: Object.fromEntries(
    [...LUA_MODULES, ...ROUTES_LUA_MODULES, CERTS_MODULE].map((m) => [m, `-- ${m}: a stand-in for the golden text\n`]),
  ),
};
/**
 * The placeholder certificate pushed certificates render (a fixed stand-in for the one each state dir makes), as
 * ensureTlsPlaceholder keeps it: certificate, then key.
 */
const placeholderPem = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "placeholder.pem"), "utf8");
const PLACEHOLDER = {
  cert: /-----BEGIN CERTIFICATE-----\n[^-]+-----END CERTIFICATE-----\n/.exec(placeholderPem)?.[0] ?? "",
  key: /-----BEGIN PRIVATE KEY-----\n[^-]+-----END PRIVATE KEY-----\n/.exec(placeholderPem)?.[0] ?? "",
};
/**
 * `# mode: routes-dynamic` cases: what `nginx-lb run --routes-mode dynamic` renders, routes and certificates pushed
 * (one server per port, plain or TLS).
 */
const ROUTES_DYNAMIC: Partial<RenderOptions> = {
  ...DYNAMIC,
  routesMode: "dynamic",
  certsMode: "pushed",
  tlsPlaceholder: PLACEHOLDER,
};
const MODES: Readonly<Record<string, Partial<RenderOptions>>> = {
  "# mode: dynamic": DYNAMIC,
  "# mode: routes-dynamic": ROUTES_DYNAMIC,
};

function split(text: string, file: string): { head: string; input: string; expected: string } {
  const at = text.indexOf(`\n${SEPARATOR}\n`);
  if (at < 0) throw new Error(`${file}: no separator line "${SEPARATOR}"`);
  const before = text.slice(0, at + 1);
  const lines = before.split("\n");
  const firstInput = lines.findIndex((l) => !l.startsWith("#"));
  return {
    head: lines.slice(0, firstInput).join("\n"),
    input: lines.slice(firstInput).join("\n"),
    expected: text.slice(at + SEPARATOR.length + 2),
  };
}

afterAll(cleanupNginx);

describe("golden nginx.conf", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(9));

  for (const file of cases) {
    it(file, async () => {
      const path = join(here, file);
      const { head, input, expected } = split(readFileSync(path, "utf8"), file);
      const { services, backends } = JSON.parse(input) as { services: unknown; backends?: unknown };
      const desired = mustDesired(services, backends ?? {});
      const options = { ...OPTIONS, ...(MODES[head.split("\n")[0] ?? ""] ?? {}) };
      const conf = renderNginxConf(desired, options).conf;
      if (process.env["UPDATE_GOLDEN"] === "1")
        writeFileSync(path, `${head ? `${head}\n` : ""}${input.trimEnd()}\n${SEPARATOR}\n${conf}`);
      else expect(conf).toBe(expected);

      // The same input rendered into a real temp prefix must satisfy nginx itself.
      const dir = await tempDir("nginx-lb-golden-");
      const real = options.luaSource ? { luaSource: balancerLuaSource() } : {};
      const t = await checkConfig(renderNginxConf(desired, { ...options, ...real, dir }), dir);
      expect(t.output).not.toMatch(/emerg|\[error\]/);
      expect(t.ok, t.output).toBe(true);
    });
  }
});
