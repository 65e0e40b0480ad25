import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nginxTest } from "./binary.js";

const DEFAULT_MODULES_DIR = "/usr/lib/nginx/modules";

/** Whether dynamic endpoints can work here; when not, `reason` is the one log line saying why. */
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
    return {
      ok: false,
      reason:
        `nginx cannot load the Lua module (${(line ?? "").trim()}); ` +
        `using reload mode: install libnginx-mod-http-lua and lua-resty-core for reload-free endpoint changes`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
