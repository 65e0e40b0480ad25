import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { resolveRunConfig, RUN_DEFAULTS, USAGE } from "./run-config.js";

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
async function secretFile(content: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-run-config-"));
  dirs.push(dir);
  await writeFile(join(dir, "secret"), content, { mode: 0o600 });
  return join(dir, "secret");
}

describe("resolveRunConfig", () => {
  test("no flags and no environment: every default, no registry, admin on its default address", async () => {
    const r = await resolveRunConfig({}, {});
    expect(r.ok && r.value).toEqual({
      controller: {
        services: RUN_DEFAULTS.services,
        stateDir: RUN_DEFAULTS.stateDir,
        watchServices: true,
        endpointsMode: "auto",
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
    const r = await resolveRunConfig({ listenHost: "localhost", logLevel: "loud", endpointsMode: "fast" }, {});
    expect(!r.ok && r.errors.map((e) => e.path)).toEqual(["--listen-host", "--log-level", "--endpoints-mode"]);
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
