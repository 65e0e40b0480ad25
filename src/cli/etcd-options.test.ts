import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { Command } from "commander";
import { addEtcdOptions, etcdConfigFromFlags } from "./etcd-options.js";
import { checkEtcdOptions } from "../sources/registry.js";

describe("etcd flags", () => {
  test("there is no password flag: a password on the command line is refused by the parser", () => {
    const cmd = addEtcdOptions(new Command().exitOverride().configureOutput({ writeErr: () => undefined }));
    expect(() => cmd.parse(["--etcd-password", "x"], { from: "user" })).toThrow(/unknown option/);
  });

  test("the password comes from NGINX_LB_ETCD_PASSWORD, or from a file without its trailing newline", async () => {
    const env = await etcdConfigFromFlags({ etcdUsername: "root" }, { NGINX_LB_ETCD_PASSWORD: "pw-env" });
    expect(env.ok && env.value).toMatchObject({ username: "root", password: "pw-env" });
    const dir = await mkdtemp(join(tmpdir(), "nginx-lb-pw-"));
    await writeFile(join(dir, "pw"), "pw-file\n");
    const file = await etcdConfigFromFlags(
      { etcdUsername: "root", etcdPasswordFile: join(dir, "pw") },
      { NGINX_LB_ETCD_PASSWORD: "pw-env" },
    );
    expect(file.ok && file.value).toMatchObject({ username: "root", password: "pw-file" });
  });

  test("a username without a password is an error naming where the password comes from", async () => {
    const flags = await etcdConfigFromFlags({ etcdUsername: "root", etcdEndpoints: "http://127.0.0.1:2379" }, {});
    if (!flags.ok) throw new Error("flags rejected");
    const r = await checkEtcdOptions(flags.value);
    expect(!r.ok && r.errors[0]).toMatchObject({ path: "--etcd-username" });
    expect(!r.ok && r.errors[0]?.message).toContain("NGINX_LB_ETCD_PASSWORD");
  });

  test("HOST_IP and ETCD_PORT form the endpoint when --etcd-endpoints is absent", async () => {
    const r = await etcdConfigFromFlags({}, { HOST_IP: "192.168.58.1", ETCD_PORT: "4001" });
    expect(r.ok && r.value.etcdUrls).toEqual(["http://192.168.58.1:4001"]);
    const both = await etcdConfigFromFlags({ etcdEndpoints: "http://a:1, http://b:2" }, { HOST_IP: "10.0.0.1" });
    expect(both.ok && both.value.etcdUrls).toEqual(["http://a:1", "http://b:2"]);
  });
});
