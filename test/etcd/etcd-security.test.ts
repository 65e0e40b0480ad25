/**
 * etcd TLS (certificates made by the test with openssl) and auth, through the same factory the daemon uses: right
 * credentials read the registry; wrong ones give a clear error, and a running source keeps its last known endpoints.
 */
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";
import { cli, gatedRetry, memoryLogger, run } from "../helpers/sources.js";
import { createEndpointSource, type EtcdOptions } from "../../src/sources/registry.js";
import type { BackendSet } from "../../src/model/backends.js";

const P = "/lb/backends";
const KEY = `${P}/sec-web/ips/10.9.0.1`;

function source(config: EtcdOptions) {
  const { logger, lines } = memoryLogger();
  return { src: run<BackendSet>(createEndpointSource(config, logger)), lines };
}

const errorLogged = (lines: string[], re: RegExp) => () => lines.some((l) => l.includes('"level":50') && re.test(l));

describe.each(["v3", "v2"] as const)("etcd %s over TLS with client certificates", (api) => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd({ v2: api === "v2", tls: { clientCertAuth: true } });
    if (api === "v2") await etcd.ctl(["set", KEY, '{"weight":3}'], { api: 2 });
    else await etcd.ctl(["put", KEY, '{"weight":3}']);
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  test("the CA and a client certificate read the registry", async () => {
    const tls = etcd.tls!;
    const { src } = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api,
      cacert: tls.caFile,
      cert: tls.clientCertFile,
      key: tls.clientKeyFile,
    });
    try {
      const s = await src.waitFor("list over TLS", (x) => x.connected);
      expect(s.value).toEqual({ "sec-web": { "10.9.0.1": { weight: 3 } } });
    } finally {
      await src.stop();
    }
  });

  test("without a client certificate: an error is logged and no endpoints are invented", async () => {
    const { src, lines } = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api,
      cacert: etcd.tls!.caFile,
      retry: { baseMs: 50, maxMs: 200 },
    });
    try {
      await waitFor("an error log", errorLogged(lines, /etcd at .*serving the last known endpoints/));
      expect(src.snapshots).toEqual([]);
    } finally {
      await src.stop();
    }
  });

  test("register and deregister over TLS with the client certificate", async () => {
    const tls = etcd.tls!;
    const key = `${P}/reg-web/ips/10.9.1.1`;
    const flags = ["--etcd-endpoints", etcd.endpoint, "--etcd-api", api, "--etcd-cacert", tls.caFile]
      .concat(["--etcd-cert", tls.clientCertFile, "--etcd-key", tls.clientKeyFile])
      .concat(["--app", "reg", "--service", "web", "--ip", "10.9.1.1"]);
    const get = async () => {
      const r = await etcd.ctl(api === "v2" ? ["get", key] : ["get", key, "--print-value-only"], {
        api: api === "v2" ? 2 : 3,
        allowFail: true,
      });
      return r.code === 0 ? r.stdout.trim() : "";
    };
    const reg = cli(["register", ...flags]);
    try {
      await waitFor("registered over TLS", async () => (await get()) === '{"weight":50}');
    } finally {
      reg.child.kill("SIGTERM");
    }
    expect(await reg.exited).toBe(0);
    expect(await get()).toBe("");
    await etcd.ctl(api === "v2" ? ["set", key, "{}"] : ["put", key, "{}"], { api: api === "v2" ? 2 : 3 });
    const d = cli(["deregister", ...flags]);
    expect(await d.exited).toBe(0);
    expect(await get()).toBe("");
  });

  test("an unreadable CA file: the error names the flag, and the source retries rather than failing", async () => {
    const { src, lines } = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api,
      cacert: "/nonexistent/ca.pem",
      retry: { baseMs: 50, maxMs: 200 },
    });
    try {
      await waitFor("an error log", errorLogged(lines, /--etcd-cacert: cannot read \/nonexistent\/ca.pem/));
      expect(src.snapshots).toEqual([]);
    } finally {
      await src.stop();
    }
  });
});

describe("etcd v3 with auth", () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd();
    await etcd.ctl(["put", KEY, '{"weight":4}']);
    await etcd.enableAuth("right-pw");
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  test("after an etcd restart (every auth token void) the source authenticates again and follows changes", async () => {
    const { src } = source({
      etcdUrls: [etcd.endpoint],
      prefix: "/lb/auth-restart",
      api: "v3",
      username: "root",
      password: "right-pw",
      retry: { baseMs: 50, maxMs: 400 },
    });
    try {
      await src.waitFor("list with auth", (x) => x.connected);
      await etcd.stop();
      await src.waitFor("disconnected", (x) => !x.connected);
      await etcd.start();
      await etcd.ctl(["put", "/lb/auth-restart/sec-web/ips/10.9.0.2", '{"weight":6}'], { user: "root:right-pw" });
      const s = await src.waitFor("reconnected", (x) => x.connected && x.value["sec-web"]?.["10.9.0.2"] !== undefined);
      expect(s.value).toEqual({ "sec-web": { "10.9.0.2": { weight: 6 } } });
    } finally {
      await src.stop();
    }
  });

  test("right credentials read; after the password changes, the error is clear and the last endpoints stay", async () => {
    const gate = gatedRetry();
    const { src, lines } = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api: "v3",
      username: "root",
      password: "right-pw",
      retry: gate.retry,
    });
    try {
      const s = await src.waitFor("list with auth", (x) => x.connected);
      expect(s.value).toEqual({ "sec-web": { "10.9.0.1": { weight: 4 } } });
      execFileSync(
        "etcdctl",
        [`--endpoints=${etcd.endpoint}`, "--user=root:right-pw", "user", "passwd", "root", "--interactive=false"],
        { input: "new-pw\n", env: { ...process.env, ETCDCTL_API: "3" } },
      );
      // A restart drops the authenticated watch stream; reconnecting needs the (now wrong) password again.
      await etcd.stop();
      await etcd.start();
      const down = await src.waitFor("disconnected", (x) => !x.connected, 30_000);
      expect(down.value).toEqual({ "sec-web": { "10.9.0.1": { weight: 4 } } });
      await waitFor("a clear error", errorLogged(lines, /rejected the credentials of user \\"root\\"/));
      expect(lines.join("\n")).not.toContain("right-pw");
    } finally {
      gate.release();
      await src.stop();
    }
  });
});

describe("etcd v2 with auth", () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd({ v2: true });
    await etcd.ctl(["set", KEY, '{"weight":5}'], { api: 2 });
    await etcd.enableAuth("right-pw", 2);
  });
  afterAll(async () => {
    await etcd?.destroy();
  });

  test("right credentials read; wrong ones give a clear error", async () => {
    const good = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api: "v2",
      username: "root",
      password: "right-pw",
    });
    try {
      const s = await good.src.waitFor("list with auth", (x) => x.connected);
      expect(s.value).toEqual({ "sec-web": { "10.9.0.1": { weight: 5 } } });
    } finally {
      await good.src.stop();
    }
    const bad = source({
      etcdUrls: [etcd.endpoint],
      prefix: P,
      api: "v2",
      username: "root",
      password: "wrong-pw",
    });
    try {
      await waitFor("a clear error", errorLogged(bad.lines, /rejected the credentials of user \\"root\\"/));
      expect(bad.src.snapshots).toEqual([]);
      expect(bad.lines.join("\n")).not.toContain("wrong-pw");
    } finally {
      await bad.src.stop();
    }
  });
});
