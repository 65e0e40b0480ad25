/**
 * Renderer golden cases: each `*.case` file is comment lines (`#`), the input as JSON
 * (`{ "services": ..., "backends": ... }`), the separator line below, then the expected nginx.conf. A new case is a new
 * file; `UPDATE_GOLDEN=1 npx vitest run test/golden` rewrites the expected part from the renderer, to review in the diff.
 * Every expected config must also pass the real `nginx -t`.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
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
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(8));

  for (const file of cases) {
    it(file, async () => {
      const path = join(here, file);
      const { head, input, expected } = split(readFileSync(path, "utf8"), file);
      const { services, backends } = JSON.parse(input) as { services: unknown; backends?: unknown };
      const desired = mustDesired(services, backends ?? {});
      const conf = renderNginxConf(desired, OPTIONS).conf;
      if (process.env["UPDATE_GOLDEN"] === "1")
        writeFileSync(path, `${head ? `${head}\n` : ""}${input.trimEnd()}\n${SEPARATOR}\n${conf}`);
      else expect(conf).toBe(expected);

      // The same input rendered into a real temp prefix must satisfy nginx itself.
      const dir = await tempDir("nginx-lb-golden-");
      const t = await checkConfig(renderNginxConf(desired, { ...OPTIONS, dir }), dir);
      expect(t.output).not.toMatch(/emerg|\[error\]/);
      expect(t.ok, t.output).toBe(true);
    });
  }
});
