import { LUA_PACKAGES, type WantedEndpointsMode } from "./endpoints-mode.js";

/**
 * The routes mode decided, or why the one asked for cannot work here. `fallback` says why the default settled on
 * reload (the caller says it once: a log line, a comment in rendered output).
 */
export type RoutesModeChoice =
  | { readonly ok: true; readonly mode: "dynamic" | "reload"; readonly fallback?: string }
  | { readonly ok: false; readonly reason: string };

/**
 * Decides the routes mode from `--routes-mode` (undefined when not given) and the endpoints mode already decided:
 * routes pushed need the Lua balancer, which holds the sets the pushed routes name. So the default is dynamic wherever
 * dynamic endpoints run, and reload elsewhere; an explicit `dynamic` without dynamic endpoints is refused. `run` and
 * `render` both call this, so `render` shows what `run` would serve.
 */
export function chooseRoutesMode(
  wanted: "dynamic" | "reload" | undefined,
  endpoints: { readonly wanted: WantedEndpointsMode; readonly mode: "dynamic" | "reload" },
): RoutesModeChoice {
  if (wanted === "reload") return { ok: true, mode: "reload" };
  if (endpoints.mode === "dynamic") return { ok: true, mode: "dynamic" };
  const why =
    endpoints.wanted === "reload"
      ? "--endpoints-mode reload: pushed routes need dynamic endpoints"
      : `nginx cannot load the Lua module (install ${LUA_PACKAGES})`;
  if (wanted === undefined) return { ok: true, mode: "reload", fallback: why };
  return {
    ok: false,
    reason:
      endpoints.wanted === "reload"
        ? "--routes-mode dynamic needs dynamic endpoints: drop --endpoints-mode reload or pass --routes-mode reload"
        : `--routes-mode dynamic needs dynamic endpoints, which this nginx cannot run (install ${LUA_PACKAGES}), or pass --routes-mode reload`,
  };
}
