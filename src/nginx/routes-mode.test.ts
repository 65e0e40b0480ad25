import { describe, expect, it } from "vitest";
import { chooseRoutesMode, type RoutesModeChoice } from "./routes-mode.js";

const dyn = (mode: "dynamic" | "reload"): RoutesModeChoice => ({ ok: true, mode });
const fellBack = (fallback: string): RoutesModeChoice => ({ ok: true, mode: "reload", fallback });
const refused = (reason: string): RoutesModeChoice => ({ ok: false, reason });
const NO_LUA = "nginx cannot load the Lua module (install libnginx-mod-http-lua lua-resty-core)";
const ASKED = "--endpoints-mode reload: pushed routes need dynamic endpoints";
const NO_LUA_REFUSED =
  "--routes-mode dynamic needs dynamic endpoints, which this nginx cannot run (install libnginx-mod-http-lua lua-resty-core), or pass --routes-mode reload";
const ASKED_REFUSED =
  "--routes-mode dynamic needs dynamic endpoints: drop --endpoints-mode reload or pass --routes-mode reload";

describe("chooseRoutesMode", () => {
  it.each([
    ["default, dynamic endpoints (auto): dynamic", undefined, "auto", "dynamic", dyn("dynamic")],
    ["default, dynamic endpoints (asked): dynamic", undefined, "dynamic", "dynamic", dyn("dynamic")],
    ["default, no Lua module: reload and why", undefined, "auto", "reload", fellBack(NO_LUA)],
    ["default, --endpoints-mode reload: reload and why", undefined, "reload", "reload", fellBack(ASKED)],
    ["reload asked, dynamic endpoints: reload, nothing to say", "reload", "auto", "dynamic", dyn("reload")],
    ["reload asked, reload endpoints: reload, nothing to say", "reload", "reload", "reload", dyn("reload")],
    ["dynamic asked, dynamic endpoints: dynamic", "dynamic", "auto", "dynamic", dyn("dynamic")],
    ["dynamic asked, no Lua module: refused, what to install", "dynamic", "auto", "reload", refused(NO_LUA_REFUSED)],
    ["dynamic asked, --endpoints-mode reload: refused", "dynamic", "reload", "reload", refused(ASKED_REFUSED)],
  ] as const)("%s", (_, wanted, endpointsWanted, endpointsMode, expected) =>
    expect(chooseRoutesMode(wanted, { wanted: endpointsWanted, mode: endpointsMode })).toEqual(expected),
  );
});
