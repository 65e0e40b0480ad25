import { afterEach, describe, expect, test, vi } from "vitest";
import { statusCommand } from "./status.js";

afterEach(() => vi.restoreAllMocks());

describe("nginx-lb status", () => {
  test("an unreadable --admin-token-file is exit 2 naming the flag, before any request", async () => {
    vi.stubEnv("NGINX_LB_ADMIN_TOKEN", undefined);
    const errors: string[] = [];
    vi.spyOn(console, "error").mockImplementation((m: string) => void errors.push(m));
    const fetch = vi.spyOn(globalThis, "fetch");
    const code = await statusCommand({ admin: "http://127.0.0.1:9", adminTokenFile: "/nonexistent/token" });
    expect(code).toBe(2);
    expect(errors.join("\n")).toMatch(/cannot read --admin-token-file: .*ENOENT/);
    expect(fetch).not.toHaveBeenCalled();
    vi.unstubAllEnvs();
  });
});
