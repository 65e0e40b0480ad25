import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { parseDuration, resolveRunConfig, RUN_DEFAULTS, startFileProblems, USAGE } from "./run-config.js";

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
async function secretFile(content: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-run-config-"));
  dirs.push(dir);
  await writeFile(join(dir, "secret"), content, { mode: 0o600 });
  return join(dir, "secret");
}

/** Account files for the --nginx-user tests: a machine with a dedicated user, and one without www-data. */
async function accounts(uid: number, withWwwData = true) {
  const passwd = [
    ...(withWwwData ? ["www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin"] : []),
    "nginx-lb:x:998:997::/nonexistent:/usr/sbin/nologin",
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
  ];
  const group = ["www-data:x:33:", "nginx-lb:x:997:", "nogroup:x:65534:"];
  return { uid, passwdFile: await secretFile(passwd.join("\n")), groupFile: await secretFile(group.join("\n")) };
}
const NOT_ROOT = { uid: 1000, passwdFile: "/nonexistent", groupFile: "/nonexistent" };

describe("resolveRunConfig", () => {
  test("no flags and no environment: every default, no registry, admin on its default address", async () => {
    const r = await resolveRunConfig({}, {}, NOT_ROOT);
    expect(r.ok && r.value).toEqual({
      controller: {
        services: RUN_DEFAULTS.services,
        stateDir: RUN_DEFAULTS.stateDir,
        watchServices: true,
        endpointsMode: "auto",
        startTimeoutMs: 60_000,
      },
      admin: { stateDir: RUN_DEFAULTS.stateDir, traffic: true },
      logLevel: "info",
    });
  });

  test("flags become the controller's options (numbers parsed, --no-watch, --no-traffic-log)", async () => {
    const r = await resolveRunConfig(
      {
        services: "/s.json",
        stateDir: "/st",
        backends: "/b.json",
        nginx: "/opt/nginx",
        listenHost: "127.0.0.1",
        controlPort: "8999",
        workerProcesses: "3",
        watch: false,
        endpointsMode: "reload",
        adminListen: "off",
        trafficLog: false,
        logLevel: "debug",
        etcdEndpoints: "http://10.0.0.1:2379",
      },
      {},
    );
    expect(r.ok && r.value.controller).toMatchObject({
      services: "/s.json",
      stateDir: "/st",
      backends: "/b.json",
      nginx: "/opt/nginx",
      listenHost: "127.0.0.1",
      controlPort: 8999,
      workerProcesses: 3,
      watchServices: false,
      endpointsMode: "reload",
      etcd: { etcdUrls: ["http://10.0.0.1:2379"], api: "v3" },
    });
    expect(r.ok && r.value.admin).toEqual({ stateDir: "/st", listen: "off", traffic: false });
    expect(r.ok && r.value.logLevel).toBe("debug");
  });

  test("every secret: the file first, then the environment (admin token and etcd password alike)", async () => {
    const env = { NGINX_LB_ADMIN_TOKEN: "token-from-the-environment", NGINX_LB_ETCD_PASSWORD: "pw-env" };
    const fromEnv = await resolveRunConfig({ etcdUsername: "root", etcdEndpoints: "http://e:2379" }, env);
    expect(fromEnv.ok && fromEnv.value.admin.token).toBe("token-from-the-environment");
    expect(fromEnv.ok && fromEnv.value.controller.etcd?.password).toBe("pw-env");
    const fromFiles = await resolveRunConfig(
      {
        etcdUsername: "root",
        etcdEndpoints: "http://e:2379",
        adminTokenFile: await secretFile("token-from-the-file-0123\n"),
        etcdPasswordFile: await secretFile("pw-file\n"),
      },
      env,
    );
    expect(fromFiles.ok && fromFiles.value.admin.token).toBe("token-from-the-file-0123");
    expect(fromFiles.ok && fromFiles.value.controller.etcd?.password).toBe("pw-file");
  });

  test("an unreadable or empty token file is an error naming the flag, not a silent fall back", async () => {
    const missing = await resolveRunConfig({ adminTokenFile: "/nonexistent/token" }, { NGINX_LB_ADMIN_TOKEN: "x" });
    expect(!missing.ok && missing.errors).toEqual([expect.objectContaining({ path: "--admin-token-file" })]);
    const empty = await resolveRunConfig({ adminTokenFile: await secretFile("\n") }, {});
    expect(!empty.ok && empty.errors[0]?.message).toContain("is empty");
  });

  test("--admin-token VALUE is a usage error pointing to the file and environment forms", async () => {
    for (const adminToken of ["s3cret-on-the-command-line", true]) {
      const r = await resolveRunConfig({ adminToken }, {});
      expect(!r.ok && r.errors[0]).toMatchObject({ code: USAGE, path: "--admin-token" });
      expect(!r.ok && r.errors[0]?.message).toMatch(/--admin-token-file.*NGINX_LB_ADMIN_TOKEN/);
    }
  });

  test("flags nginx.conf cannot hold, a bad log level and a bad mode are all reported at once", async () => {
    const r = await resolveRunConfig(
      { listenHost: "localhost", logLevel: "loud", endpointsMode: "fast", nginxUser: "no body" },
      {},
    );
    expect(!r.ok && r.errors.map((e) => e.path)).toEqual([
      "--listen-host",
      "--log-level",
      "--endpoints-mode",
      "--nginx-user",
    ]);
  });

  test("--routes-mode: left to run (chooseRoutesMode) by default, as asked otherwise; dynamic with --endpoints-mode reload is a usage error", async () => {
    const dflt = await resolveRunConfig({}, {}, NOT_ROOT);
    expect(dflt.ok && dflt.value.controller.routesMode).toBeUndefined();
    const rel = await resolveRunConfig({ routesMode: "reload" }, {}, NOT_ROOT);
    expect(rel.ok && rel.value.controller.routesMode).toBe("reload");
    const dyn = await resolveRunConfig({ routesMode: "dynamic" }, {}, NOT_ROOT);
    expect(dyn.ok && dyn.value.controller).toMatchObject({ routesMode: "dynamic", endpointsMode: "auto" });
    const bad = await resolveRunConfig({ routesMode: "fast" }, {}, NOT_ROOT);
    expect(!bad.ok && bad.errors.map((e) => e.path)).toEqual(["--routes-mode"]);
    const clash = await resolveRunConfig({ routesMode: "dynamic", endpointsMode: "reload" }, {}, NOT_ROOT);
    expect(!clash.ok && clash.errors[0]).toMatchObject({ code: USAGE, path: "--routes-mode" });
  });

  test("--nginx-user as root: the named user, else www-data, else nobody with a warning; none when not root", async () => {
    const named = await resolveRunConfig({ nginxUser: "nginx-lb" }, {}, await accounts(0));
    expect(named.ok && named.value.controller.nginxUser).toEqual({
      name: "nginx-lb",
      group: "nginx-lb",
      uid: 998,
      gid: 997,
    });
    expect(named.warnings).toEqual([]);
    const dflt = await resolveRunConfig({}, {}, await accounts(0));
    expect(dflt.ok && dflt.value.controller.nginxUser?.name).toBe("www-data");
    const fallback = await resolveRunConfig({}, {}, await accounts(0, false));
    expect(fallback.ok && fallback.value.controller.nginxUser?.name).toBe("nobody");
    expect(fallback.warnings.map((w) => w.path)).toEqual(["--nginx-user"]);
    const notRoot = await resolveRunConfig({ nginxUser: "nginx-lb" }, {}, NOT_ROOT);
    expect(notRoot.ok && notRoot.value.controller.nginxUser).toBeUndefined();
    expect(notRoot.warnings[0]?.message).toMatch(/ignored/);
  });

  test("--nginx-user naming no user is an error (exit 1, not a usage error) naming the flag", async () => {
    const r = await resolveRunConfig({ nginxUser: "nosuchuser" }, {}, await accounts(0));
    expect(!r.ok && r.errors).toEqual([
      expect.objectContaining({
        code: "invalid_flag",
        path: "--nginx-user",
        message: expect.stringMatching(/nosuchuser/),
      }),
    ]);
  });

  test("HOST_IP and ETCD_PORT give the etcd URL when --etcd-endpoints is absent", async () => {
    const r = await resolveRunConfig({}, { HOST_IP: "192.168.58.1", ETCD_PORT: "4001" });
    expect(r.ok && r.value.controller.etcd?.etcdUrls).toEqual(["http://192.168.58.1:4001"]);
  });
});

describe("resolveRunConfig --health-listen", () => {
  test("an address reaches the admin flags; off and absent mean none", async () => {
    const on = await resolveRunConfig({ healthListen: "0.0.0.0:9181" }, {});
    expect(on.ok && on.value.admin.healthListen).toBe("0.0.0.0:9181");
    for (const flags of [{ healthListen: "off" }, {}]) {
      const off = await resolveRunConfig(flags, {});
      expect(off.ok && "healthListen" in off.value.admin).toBe(false);
    }
  });

  test("a malformed address is an error naming the flag once", async () => {
    const r = await resolveRunConfig({ healthListen: "9181" }, {});
    expect(!r.ok && r.errors).toEqual([
      { code: "invalid_flag", path: "--health-listen", message: 'must be HOST:PORT (e.g. 127.0.0.1:9180), got "9181"' },
    ]);
  });
});

describe("--start-timeout", () => {
  test("durations as operators write them; the environment's value arrives as the flag (commander)", async () => {
    expect(["500ms", "30s", "2m", "1h", "45", "1.5s", " 10s "].map(parseDuration)).toEqual([
      500, 30_000, 120_000, 3_600_000, 45_000, 1500, 10_000,
    ]);
    const r = await resolveRunConfig({ startTimeout: "2m" }, {});
    expect(r.ok && r.value.controller.startTimeoutMs).toBe(120_000);
  });

  test("anything else is an error naming the flag", async () => {
    for (const bad of ["", "5x", "-1s", "s", "1e3"]) expect(parseDuration(bad)).toBeNull();
    const r = await resolveRunConfig({ startTimeout: "soon" }, {});
    expect(!r.ok && r.errors).toEqual([
      {
        code: "invalid_flag",
        path: "--start-timeout",
        message: '"soon": give a duration such as 500ms, 30s, 2m or plain seconds',
      },
    ]);
  });
});

describe("--outlier-ejection", () => {
  test("reaches the controller's options; a bad value is an error naming the flag", async () => {
    const r = await resolveRunConfig({ outlierEjection: "3,10s" }, {});
    expect(r.ok && r.value.controller.outlier).toEqual({ errors: 3, baseMs: 10_000, maxMs: 300_000, maxPercent: 50 });
    const bad = await resolveRunConfig({ outlierEjection: "often" }, {});
    expect(!bad.ok && bad.errors.map((e) => e.path)).toEqual(["--outlier-ejection"]);
  });
});

describe("startFileProblems", () => {
  test("a missing services file, etcd TLS file or nginx binary: one problem each, naming the flag", async () => {
    const notExecutable = await secretFile("not nginx");
    const problems = await startFileProblems(
      { services: "/nonexistent/s.json", etcdCacert: "/nonexistent/ca.pem", etcdKey: "/etc", nginx: notExecutable },
      {},
    );
    expect(problems.map((p) => [p.path, p.message])).toEqual([
      ["--services", "/nonexistent/s.json does not exist: check the path"],
      ["--etcd-cacert", "/nonexistent/ca.pem does not exist: check the path"],
      ["--etcd-key", "/etc is not a file: name the file itself"],
      ["--nginx", `${notExecutable} is not an executable file: pass the path of nginx (e.g. /usr/sbin/nginx)`],
    ]);
  });

  test("readable files and an executable nginx: none", async () => {
    expect(await startFileProblems({ services: await secretFile("{}"), nginx: "/bin/sh" }, {})).toEqual([]);
  });
});
