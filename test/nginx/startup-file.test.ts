import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LUA_DIR } from "../../src/nginx/lua-source.js";
import { DEFAULT_MODULES_DIR } from "../../src/render/dynamic.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePorts, startStandaloneNginx, tempDir } from "../helpers/nginx.js";

/**
 * nginx_lb_startup_file in a real nginx's init_by_lua, as the start-up loaders use it: what it reads, what it refuses,
 * and the Lua heap it leaves. LuaJIT's f:read(n) reserves n bytes that count as heap; a read "up to the limit" would
 * make the master, and every worker forked from it, look up to hundreds of MB large to its collector, which would then
 * let garbage pile up as much before its first cycle.
 */

const LIMIT = 16 * 1024 * 1024;
const BIG = 12 * 1024 * 1024;
let port = 0;
let dir = "";

beforeAll(async () => {
  dir = await tempDir("nginx-lb-startup-file-");
  [port = 0] = await freePorts(1);
  await writeFile(join(dir, "small.txt"), "hello\n");
  await writeFile(join(dir, "empty.txt"), "");
  await writeFile(join(dir, "big.txt"), Buffer.alloc(BIG, "x"));
  await mkdir(join(dir, "a-dir"));
  const path = (name: string) => JSON.stringify(join(dir, name));
  const init = [
    `local sf = require("nginx_lb_startup_file")`,
    `local out = {}`,
    `local function rec(name, text, err) out[#out + 1] = name .. "=" .. (text and #text or "nil") .. ":" .. tostring(err) end`,
    `rec("absent", sf.read(${path("absent.txt")}, ${LIMIT}))`,
    `rec("empty", sf.read(${path("empty.txt")}, ${LIMIT}))`,
    `rec("dir", sf.read(${path("a-dir")}, ${LIMIT}))`,
    `rec("over", sf.read(${path("big.txt")}, 1000))`,
    // A small file under the largest limit a loader uses (the certificates': 128 MB): the heap must not grow by it.
    `local kb = collectgarbage("count")`,
    `rec("small", sf.read(${path("small.txt")}, 128 * 1024 * 1024))`,
    `out[#out + 1] = "small_read_kb=" .. math.floor(collectgarbage("count") - kb)`,
    `local big = sf.read(${path("big.txt")}, ${LIMIT})`,
    `rec("big", big)`,
    `big = nil`,
    `sf.release()`,
    `NLB_TEST_RESULT = table.concat(out, "|")`,
  ].join(" ");
  const conf = [
    `load_module ${DEFAULT_MODULES_DIR}/ndk_http_module.so;`,
    `load_module ${DEFAULT_MODULES_DIR}/ngx_http_lua_module.so;`,
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/logs/error.log warn;`,
    `worker_processes 1;`,
    `events {}`,
    `http {`,
    `    access_log off;`,
    `    lua_package_path "${LUA_DIR}?.lua;;";`,
    `    init_by_lua_block { ${init} }`,
    `    server {`,
    `        listen 127.0.0.1:${port};`,
    `        location / {`,
    `            content_by_lua_block { ngx.print(NLB_TEST_RESULT, "|worker_kb=", math.floor(collectgarbage("count"))) }`,
    `        }`,
    `    }`,
    `}`,
    ``,
  ].join("\n");
  await startStandaloneNginx(conf, dir);
});

afterAll(async () => {
  await cleanupNginx();
});

describe("a start-up file read in init_by_lua", () => {
  it("reads what is there, refuses what is not a file under the limit, and leaves the heap as small as before", async () => {
    const r = await get(`http://127.0.0.1:${port}/`);
    expect(r.status).toBe(200);
    const fields = Object.fromEntries(r.body.split("|").map((f) => f.split("=") as [string, string]));
    expect(fields["absent"]).toBe("nil:nil");
    expect(fields["empty"]).toBe("nil:empty file");
    expect(fields["dir"]).toMatch(/^nil:.*directory/i);
    expect(fields["over"]).toBe("nil:larger than 1000 bytes");
    expect(fields["small"]).toBe("6:nil");
    expect(fields["big"]).toBe(`${BIG}:nil`);
    // f:read(limit) reserved the whole 128 MB (it counted as heap); a chunked read takes a few KB.
    expect(Number(fields["small_read_kb"]), r.body).toBeLessThan(1024);
    // After the 12 MB file, the worker starts from the modules' heap: one collection only halves LuaJIT's buffer.
    expect(Number(fields["worker_kb"]), r.body).toBeLessThan(2048);
  });
});
