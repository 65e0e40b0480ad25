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

describe("Dockerfile: unprivileged", () => {
  const finalStage = lines.slice(lines.findLastIndex((l) => l.startsWith("FROM ")));
  test("runs as a numeric USER (runAsNonRoot can check it) that owns the state dir the volume starts from", () => {
    const user = finalStage.find((l) => l.startsWith("USER "));
    const uid = Number(/^USER (\d+):(\d+)$/.exec(user ?? "")?.[1]);
    expect(uid).toBeGreaterThan(0);
    const run = finalStage.filter((l) => l.startsWith("RUN ")).join(" ");
    expect(run).toMatch(new RegExp(`useradd --system --uid ${uid} --gid nginx-lb .* nginx-lb`));
    expect(run).toContain("install -d -o nginx-lb -g nginx-lb -m 0700 /var/lib/nginx-lb");
    const at = (prefix: string) => finalStage.findIndex((l) => l.startsWith(prefix));
    expect(at("VOLUME /var/lib/nginx-lb")).toBeGreaterThan(at("RUN apt-get update"));
    expect(at(user ?? "USER")).toBeLessThan(at("ENTRYPOINT"));
  });

  test("gives nginx, and nothing else, CAP_NET_BIND_SERVICE as a file capability", () => {
    const run = finalStage.filter((l) => l.startsWith("RUN ")).join(" ");
    expect([...run.matchAll(/setcap (\S+) (\S+)/g)].map((m) => [m[1], m[2]])).toEqual([
      ["cap_net_bind_service=+ep", "/usr/sbin/nginx"],
    ]);
  });
});

describe("compose example", () => {
  const compose = readFileSync(join(ROOT, "docker-compose.yml"), "utf8");
  /** Each service's block of lines (two-space indented key under `services:`). */
  const services = (): Record<string, string> => {
    const body = compose.slice(compose.indexOf("\nservices:\n"), compose.indexOf("\nvolumes:\n"));
    return Object.fromEntries(
      [...body.matchAll(/^ {2}([a-z0-9-]+):.*\n((?: {4}.*\n|\s*\n|\s*#.*\n)*)/gm)].map((m) => [m[1], m[2] ?? ""]),
    );
  };

  test("builds the nginx-lb image once; every container running nginx-lb uses it by name", () => {
    const s = services();
    const builders = Object.entries(s).filter(([, b]) => /^ {4}build: \.$/m.test(b));
    expect(builders.map(([n]) => n)).toEqual(["nginx-lb"]);
    const image = /^ {4}image: (\S+)$/m.exec(builders[0]?.[1] ?? "")?.[1];
    expect(image).toBeDefined();
    const runners = Object.entries(s).filter(
      ([n, b]) => n === "nginx-lb" || b.includes("nginx-lb.js") || b.includes("<<: *register"),
    );
    expect(runners.length).toBe(3);
    for (const [name, block] of runners)
      if (!block.includes("<<: *register")) expect(block, name).toContain(`image: ${image}`);
  });

  test("the load balancer keeps no capability but NET_BIND_SERVICE", () => {
    const lb = services()["nginx-lb"] ?? "";
    expect(lb).toContain("cap_drop: [ALL]");
    expect(lb).toContain("cap_add: [NET_BIND_SERVICE]");
    // no-new-privileges would disable nginx's file capability, leaving it without ports 80/443 on some runtimes.
    expect(lb).not.toMatch(/^ {4}security_opt:.*no-new-privileges/m);
  });

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
