import { detectLuaSupport, type LuaSupport } from "./lua-support.js";

/** What `--endpoints-mode` asks for; `auto` picks dynamic when nginx can load the Lua module. */
export type WantedEndpointsMode = "dynamic" | "reload" | "auto";

/**
 * The mode decided, or why the mode asked for cannot work here. `fallback` says why `auto` settled on reload (the
 * caller says it: a warning in the log, a comment in rendered output).
 */
export type EndpointsModeChoice =
  | { readonly ok: true; readonly mode: "dynamic" | "reload"; readonly fallback?: string }
  | { readonly ok: false; readonly wanted: "dynamic"; readonly reason: string };

/** What to install for dynamic mode, for messages that refuse or fall back. */
export const LUA_PACKAGES = "libnginx-mod-http-lua lua-resty-core";

/**
 * Decides the endpoints mode the way `nginx-lb run` serves it: reload when asked; otherwise dynamic when nginx can
 * load the Lua module, else reload for `auto` and a refusal for `dynamic`. `run` and `render` both call this, so
 * `render` shows what `run` would serve. `detect` is injectable for unit tests.
 */
export async function chooseEndpointsMode(
  wanted: WantedEndpointsMode,
  nginx: string,
  detect: (nginx: string) => Promise<LuaSupport> = detectLuaSupport,
): Promise<EndpointsModeChoice> {
  if (wanted === "reload") return { ok: true, mode: "reload" };
  const support = await detect(nginx);
  if (support.ok) return { ok: true, mode: "dynamic" };
  if (wanted === "dynamic")
    return {
      ok: false,
      wanted,
      reason: `--endpoints-mode dynamic needs nginx's Lua module (apt-get install ${LUA_PACKAGES}): ${support.reason}`,
    };
  return { ok: true, mode: "reload", fallback: support.reason };
}
