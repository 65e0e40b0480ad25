import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the Lua modules live: resolved from the package root, so it works from src/ (tsx) and dist/ alike. */
export const LUA_DIR = fileURLToPath(new URL("../../src/nginx/lua/", import.meta.url));

/**
 * Every Lua module by name (file name without `.lua`), for `RenderOptions.luaSource`. The renderer checks that the
 * modules nginx.conf names are all there.
 */
export function balancerLuaSource(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const file of readdirSync(LUA_DIR).sort())
    if (file.endsWith(".lua")) out[file.slice(0, -".lua".length)] = readFileSync(join(LUA_DIR, file), "utf8");
  return out;
}
