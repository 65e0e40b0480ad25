/**
 * What can be checked of the container image without a Docker engine: every file it copies exists or is built by
 * `tsc`, the entrypoint resolves to the CLI, the health check probes /readyz on the admin address the image configures, the
 * environment it sets names real flags, and the compose example's services file is valid.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, test } from "vitest";

const ROOT = new URL("../..", import.meta.url).pathname;
const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
const lines = dockerfile.split("\n").map((l) => l.trim());
const cli = (args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/main.ts"), ...args], {
    cwd: ROOT,
    encoding: "utf8",
  });
const runHelp = cli(["run", "--help"]);
const hasRun = runHelp.status === 0 && runHelp.stdout.includes("Usage: nginx-lb run");

describe("Dockerfile", () => {
  test("files copied from the build context exist", () => {
    const sources = lines
      .filter((l) => l.startsWith("COPY ") && !l.includes("--from="))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) expect(existsSync(join(ROOT, s)), s).toBe(true);
  });

  test("the entrypoint is `nginx-lb run` through bin/nginx-lb.js, which loads what tsc builds", () => {
    const entry = lines.find((l) => l.startsWith("ENTRYPOINT"));
    expect(entry).toBe('ENTRYPOINT ["/usr/local/bin/node", "/opt/nginx-lb/bin/nginx-lb.js", "run"]');
    expect(readFileSync(join(ROOT, "bin/nginx-lb.js"), "utf8")).toContain('import "../dist/cli/main.js"');
    const tsconfig = JSON.parse(readFileSync(join(ROOT, "tsconfig.json"), "utf8")) as {
      compilerOptions: { rootDir: string; outDir: string };
    };
    expect(tsconfig.compilerOptions).toMatchObject({ rootDir: "src", outDir: "dist" });
    expect(existsSync(join(ROOT, "src/cli/main.ts"))).toBe(true);
  });

  test("the health check probes /readyz (as the README recommends) on the admin server's default address; 80 and 443 are exposed", () => {
    expect(lines.find((l) => l.startsWith("HEALTHCHECK"))).toContain("http://127.0.0.1:9180/readyz");
    expect(readFileSync(join(ROOT, "README.md"), "utf8")).toMatch(
      /out of rotation[^]*`\/readyz`|`\/readyz`[^]*out of rotation/,
    );
    expect(dockerfile).not.toContain("NGINX_LB_ADMIN_LISTEN=");
    expect(lines).toContain("EXPOSE 80 443");
  });

  test("every file the built code loads beside dist/ is in the image", () => {
    // dist/<dir>/<file>.js resolves "../../x" to /opt/nginx-lb/x: each such path must be copied into the image.
    const loaded = execFileSync("grep", ["-rhoE", String.raw`["'](\.\./\.\./[^"']+)["']`, join(ROOT, "src")], {
      encoding: "utf8",
    })
      .split("\n")
      .map((l) => l.slice(1, -1).replace(/^\.\.\/\.\.\//, ""))
      .filter((l) => l !== "" && !l.startsWith("src/cli/") && !l.endsWith(".js"));
    expect(loaded).toContain("build/Release/reaper.node");
    const finalStage = lines.slice(lines.findLastIndex((l) => l.startsWith("FROM ")));
    // A target ending in "/" receives the source under its own name (COPY --from=build /src/package.json ./).
    const copied = finalStage
      .filter((l) => l.startsWith("COPY "))
      .map((l) => {
        const parts = l.split(/\s+/);
        const [source = "", target = ""] = parts.slice(-2);
        const into = target.endsWith("/") ? `${target}${source.split("/").at(-1)}` : target;
        return into.replace(/^\.\//, "");
      });
    for (const path of loaded)
      expect(
        copied.some((c) => path.startsWith(c)),
        path,
      ).toBe(true);
  });

  test("the native reaper is built in the build stage and copied where src/shared/reaper.ts loads it", () => {
    const loader = readFileSync(join(ROOT, "src/shared/reaper.ts"), "utf8");
    expect(loader).toContain('"../../build/Release/reaper.node"');
    expect(dockerfile).toContain("COPY --from=build /src/build/Release/reaper.node ./build/Release/reaper.node");
  });

  test.skipIf(!hasRun)("every NGINX_LB_ variable the image sets is a flag of `nginx-lb run`", () => {
    const vars = [...dockerfile.matchAll(/(NGINX_LB_[A-Z_]+)=/g)].map((m) => m[1]);
    expect(vars.length).toBeGreaterThan(0);
    for (const v of vars) expect(runHelp.stdout, v).toContain(v);
  });
});

describe("compose example", () => {
  test("its services file is valid", () => {
    const r = cli(["validate", "deploy/compose/services.json"]);
    expect(r.stderr).toContain("valid (1 servers, 1 routes)");
    expect(r.status).toBe(0);
  });

  test("each registrar registers its backend's fixed address", () => {
    const compose = readFileSync(join(ROOT, "docker-compose.yml"), "utf8");
    for (const n of [1, 2]) {
      const addr = new RegExp(`backend-${n}:[^]*?ipv4_address: ([0-9.]+)`).exec(compose)?.[1];
      const reg = new RegExp(`backend-${n}-register:[^]*?--ip ([0-9.]+)`).exec(compose)?.[1];
      expect(addr, `backend-${n}`).toBeDefined();
      expect(reg).toBe(addr);
    }
  });
});

test("the systemd unit passes systemd-analyze verify", () => {
  const has = spawnSync("sh", ["-c", "command -v systemd-analyze"]).status === 0;
  if (!has) return;
  expect(() =>
    execFileSync("systemd-analyze", ["verify", join(ROOT, "deploy/nginx-lb.service")], { stdio: "pipe" }),
  ).not.toThrow();
});
