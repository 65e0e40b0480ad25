import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Where the balancer's Lua lives: resolved from the package root, so it works from src/ (tsx) and dist/ alike. */
export const BALANCER_LUA_FILE = fileURLToPath(new URL("../../src/nginx/lua/nginx_lb_balancer.lua", import.meta.url));

/** The balancer's Lua source, for `RenderOptions.luaSource`. */
export function balancerLuaSource(): string {
  return readFileSync(BALANCER_LUA_FILE, "utf8");
}
