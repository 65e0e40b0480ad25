import { describe, expect, it } from "vitest";
import { chooseEndpointsMode } from "./endpoints-mode.js";

const can = async () => ({ ok: true }) as const;
const cannot = async () => ({ ok: false, reason: "no lua" }) as const;
const never = async (): Promise<never> => {
  throw new Error("reload must not probe nginx");
};

describe("chooseEndpointsMode", () => {
  it("reload: no probe", async () =>
    expect(await chooseEndpointsMode("reload", "nginx", never)).toEqual({ ok: true, mode: "reload" }));
  it("auto with Lua: dynamic", async () =>
    expect(await chooseEndpointsMode("auto", "nginx", can)).toEqual({ ok: true, mode: "dynamic" }));
  it("auto without: reload and why", async () =>
    expect(await chooseEndpointsMode("auto", "nginx", cannot)).toEqual({
      ok: true,
      mode: "reload",
      fallback: "no lua",
    }));
  it("dynamic with Lua", async () =>
    expect(await chooseEndpointsMode("dynamic", "nginx", can)).toEqual({ ok: true, mode: "dynamic" }));
  it("dynamic without: refused, what to install", async () =>
    expect(await chooseEndpointsMode("dynamic", "nginx", cannot)).toEqual({
      ok: false,
      wanted: "dynamic",
      reason:
        "--endpoints-mode dynamic needs nginx's Lua module (apt-get install libnginx-mod-http-lua lua-resty-core): no lua",
    }));
});
