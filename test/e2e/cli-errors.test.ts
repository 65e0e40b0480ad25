/**
 * Operator errors at the real CLI (`node --import tsx src/cli/main.ts ...`): each is told in plain lines with a
 * distinct exit code (1 invalid input, 2 a usage error: a file argument that names nothing readable, --out naming a
 * file), never a stack trace. And `"servers": []` does what the README says, through a real `nginx-lb run` and nginx.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, startController, stopAllControllers, writeServices } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, freePort, tempDir } from "../helpers/nginx.js";
import { cli } from "../helpers/sources.js";

let dir = "";
beforeAll(async () => {
  dir = await tempDir("nginx-lb-cli-errors-");
});
afterAll(async () => {
  await stopAllControllers();
  await cleanupNginx();
});

/** Runs the CLI to its exit; its output as lines (stdout and stderr). */
async function run(...args: string[]): Promise<{ code: number | null; lines: string[] }> {
  const c = cli(args);
  const timer = setTimeout(() => c.child.kill("SIGKILL"), 30_000);
  const code = await c.exited;
  clearTimeout(timer);
  const lines = c.output().trimEnd().split("\n");
  // No operator error may show a stack trace.
  expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]);
  return { code, lines };
}

/** Writes `text` to a new file in the test dir. */
async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

const site = (fields: string) => `{"servers":[{"domain_name":"a.example.com",${fields}}]}`;
const route = '{"app":"web","service":"api"}';

describe("validate", () => {
  it("a directory: one line, exit 2", async () => {
    expect(await run("validate", dir)).toEqual({
      code: 2,
      lines: [`error: ${dir}: is a directory: give the JSON file itself, not its directory`],
    });
  });

  it("a missing file: one line, exit 2", async () => {
    const missing = join(dir, "missing.json");
    expect(await run("validate", missing)).toEqual({
      code: 2,
      lines: [`error: ${missing}: does not exist: check the path`],
    });
  });

  it("a JSON syntax error: line and column, exit 1", async () => {
    const f = await file("syntax.json", `{\n  "servers": [\n    {"domain_name": "a.example.com",}\n  ]\n}\n`);
    expect(await run("validate", f)).toEqual({
      code: 1,
      lines: [
        `error: ${f}: is not valid JSON: line 3 column 36: a "," before "}": JSON allows no trailing comma`,
        `${f}: 1 error; the file is not valid`,
      ],
    });
  });

  it("a UTF-8 byte-order mark is accepted", async () => {
    const f = await file("bom.json", `\uFEFF${site(`"routes":{"/":${route}}`)}`);
    expect(await run("validate", f)).toEqual({ code: 0, lines: [`${f}: valid (1 servers, 1 routes)`] });
  });

  it("a duplicate key is a warning naming its path and both places", async () => {
    const f = await file(
      "dup.json",
      `{"servers":[{"domain_name":"a.example.com","routes":{"/":${route},"/":${route}}}]}`,
    );
    expect(await run("validate", f)).toEqual({
      code: 0,
      lines: [
        `warning: ${f}: servers[0].routes["/"]: appears twice in one object (line 1 column 54, again line 1 column 88); only the last one counts: remove the other`,
        `${f}: valid (1 servers, 1 routes)`,
      ],
    });
  });

  it("a route key __proto__ is an error naming it, exit 1", async () => {
    const f = await file("proto.json", site(`"routes":{"__proto__":${route},"/":${route}}`));
    const r = await run("validate", f);
    expect(r.code).toBe(1);
    expect(r.lines[0]).toMatch(/^error: .*: servers\[0\]\.routes\.__proto__: route key must be .*, got "__proto__"$/);
  });

  it("a misspelled field: did you mean", async () => {
    const f = await file("typo.json", site(`"fronted_port":8080`));
    expect(await run("validate", f)).toEqual({
      code: 0,
      lines: [
        `warning: ${f}: servers[0].fronted_port: unknown field, ignored: did you mean \`frontend_port\`?`,
        `${f}: valid (1 servers, 0 routes)`,
      ],
    });
  });

  it("an encrypted private key gets its own message and is never quoted", async () => {
    const { privateKey } = generateKeyPairSync("rsa", {
      modulusLength: 2048,
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "secret" },
    });
    const cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const f = await file(
      "encrypted.json",
      site(`"ssl_certificate":${JSON.stringify(cert)},"ssl_certificate_key":${JSON.stringify(privateKey)}`),
    );
    const r = await run("validate", f);
    expect(r).toEqual({
      code: 1,
      lines: [
        `error: ${f}: servers[0].ssl_certificate_key: the key is encrypted: nginx-lb needs an unencrypted key; decrypt it with \`openssl pkey -in key.pem -out plain.pem\``,
        `${f}: 1 error; the file is not valid`,
      ],
    });
    expect(r.lines.join("\n")).not.toContain(privateKey.split("\n")[2]);
  });
});

describe("render", () => {
  it("--out naming a regular file: one line, exit 2, the file untouched", async () => {
    const services = await file("render-services.json", site(`"routes":{"/":${route}}`));
    const out = await file("not-a-dir", "keep me\n");
    expect(await run("render", "--services", services, "--out", out)).toEqual({
      code: 2,
      lines: [`error: render: --out: ${out} is a file, not a directory: give a directory (it is created if missing)`],
    });
    expect(await readFile(out, "utf8")).toBe("keep me\n");
  });

  it("--services naming a directory: one line, exit 2", async () => {
    expect(await run("render", "--services", dir)).toEqual({
      code: 2,
      lines: [`error: ${dir}: is a directory: give the JSON file itself, not its directory`],
    });
  });

  it("a backends file with a syntax error: line and column, exit 1", async () => {
    const services = await file("render-services2.json", site(`"routes":{"/":${route}}`));
    const backends = await file("backends-syntax.json", `{\n  "web-api": {"127.0.0.2": {"weight": 1}}\n  "x": {}\n}`);
    expect(await run("render", "--services", services, "--backends", backends)).toEqual({
      code: 1,
      lines: [
        `error: ${backends}: is not valid JSON: line 3 column 3: unexpected """ where a "," was expected (one is missing before this)`,
        `${backends}: 1 error; nothing was rendered`,
      ],
    });
  });

  it("a backends file naming a backend __proto__: an error naming it, exit 1", async () => {
    const services = await file("render-services3.json", site(`"routes":{"/":${route}}`));
    const backends = await file("backends-proto.json", '{"__proto__": {"127.0.0.2": {"weight": 1}}}');
    const r = await run("render", "--services", services, "--backends", backends);
    expect(r.code).toBe(1);
    expect(r.lines[0]).toBe(
      `error: ${backends}: ["__proto__"]["127.0.0.2"]: backend name "__proto__" is reserved: routes name backends <app>-<service>`,
    );
  });

  it("--out into a new directory still writes nginx.conf", async () => {
    const services = await file("render-services4.json", site(`"routes":{"/":${route}}`));
    const out = join(dir, "out-new");
    const r = await run("render", "--services", services, "--out", out);
    expect(r.code).toBe(0);
    // The site's port, whichever routes mode render chose here (routes pushed: one server for the port).
    expect(await readFile(join(out, "nginx.conf"), "utf8")).toMatch(/^\s+listen 80( default_server)?;$/m);
  });
});

describe('"servers": [] under a real nginx-lb run', () => {
  it("listens on no frontend port (refused, not 404) and serves a server added later without a restart", async () => {
    const runDir = join(dir, "empty-run");
    await mkdir(runDir);
    const services = join(runDir, "services.json");
    const backends = join(runDir, "backends.json");
    await writeFile(services, '{"servers":[]}');
    await writeFile(backends, "{}");
    const port = await freePort();
    const lb = await startController({ services, stateDir: join(runDir, "state"), args: ["--backends", backends] });
    expect(lb.find(/servers: is empty: nginx listens on no frontend port/)).not.toEqual([]);
    await expect(get(`http://127.0.0.1:${port}/`, { host: "a.example.com" })).rejects.toThrow(/ECONNREFUSED/);

    await writeServices(services, [{ domain_name: "a.example.com", frontend_port: port, routes: {} }]);
    const r = await eventually(() => get(`http://127.0.0.1:${port}/x`, { host: "a.example.com" }));
    expect([r.status, r.body]).toEqual([404, "no route for this path\n"]);
    expect(await lb.stop()).toBe(0);
  });
});
