import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODULES_DIR } from "../render/dynamic.js";
import { nginxTest } from "./binary.js";

/** Whether dynamic endpoints can work here; when not, `reason` says why (the caller adds what it does about it). */
export type LuaSupport = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Checks that nginx loads the Lua module and finds lua-resty-core's balancer, by running `nginx -t` on a tiny config
 * in a temporary prefix. The daemon defaults to dynamic mode when this passes and falls back to reload otherwise.
 */
export async function detectLuaSupport(nginx: string, modulesDir = DEFAULT_MODULES_DIR): Promise<LuaSupport> {
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-lua-check-"));
  try {
    await mkdir(join(dir, "logs"));
    const conf = join(dir, "nginx.conf");
    await writeFile(
      conf,
      [
        `load_module ${modulesDir}/ndk_http_module.so;`,
        `load_module ${modulesDir}/ngx_http_lua_module.so;`,
        `pid ${dir}/nginx.pid;`,
        `events {}`,
        `http {`,
        `    lua_shared_dict nginx_lb_check 1m;`,
        // ngx.balancer comes from lua-resty-core; without it balancer_by_lua cannot choose a peer.
        `    init_by_lua_block { require("ngx.balancer") }`,
        `}`,
        ``,
      ].join("\n"),
    );
    const r = await nginxTest(nginx, conf, dir);
    if (r.ok) return { ok: true };
    const line = r.output.split("\n").find((l) => /emerg|error|not found/i.test(l)) ?? r.output.split("\n")[0];
    // Only the cause: the caller says what follows (reload mode, or a refusal when dynamic was asked for).
    return { ok: false, reason: `nginx cannot load the Lua module (${(line ?? "").trim() || "nginx -t failed"})` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
