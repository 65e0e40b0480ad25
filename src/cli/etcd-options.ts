import { readFile } from "node:fs/promises";
import { Option, type Command } from "commander";
import { DEFAULT_PREFIX } from "../model/backends.js";
import type { Checked, Problem } from "../model/problem.js";
import type { EtcdOptions } from "../sources/registry.js";

/** The etcd flags as commander hands them over (each also settable as NGINX_LB_<FLAG>). */
export interface EtcdFlags {
  etcdEndpoints?: string;
  etcdPrefix?: string;
  etcdApi?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUsername?: string;
  etcdPasswordFile?: string;
}

export const PASSWORD_ENV = "NGINX_LB_ETCD_PASSWORD";

/**
 * Adds the etcd connection flags to a command. There is deliberately no --etcd-password: a password on the command
 * line is visible to every user in `ps`; it comes from $NGINX_LB_ETCD_PASSWORD or --etcd-password-file.
 */
export function addEtcdOptions(command: Command, options: { endpointsRequired?: boolean } = {}): Command {
  const opt = (flags: string, description: string, env: string) => new Option(flags, description).env(env);
  return command
    .addOption(
      opt(
        "--etcd-endpoints <urls>",
        `comma-separated etcd URLs${options.endpointsRequired ? "" : " (or HOST_IP + ETCD_PORT)"}`,
        "NGINX_LB_ETCD_ENDPOINTS",
      ),
    )
    .addOption(opt("--etcd-prefix <key>", "registry prefix", "NGINX_LB_ETCD_PREFIX").default(DEFAULT_PREFIX))
    .addOption(opt("--etcd-api <v3|v2>", "etcd API to read", "NGINX_LB_ETCD_API").choices(["v3", "v2"]).default("v3"))
    .addOption(opt("--etcd-cacert <file>", "CA certificate that signed etcd's certificate", "NGINX_LB_ETCD_CACERT"))
    .addOption(opt("--etcd-cert <file>", "client certificate for etcd", "NGINX_LB_ETCD_CERT"))
    .addOption(opt("--etcd-key <file>", "client key for etcd", "NGINX_LB_ETCD_KEY"))
    .addOption(
      opt(
        "--etcd-username <name>",
        `etcd user; the password from $${PASSWORD_ENV} or --etcd-password-file`,
        "NGINX_LB_ETCD_USERNAME",
      ),
    )
    .addOption(opt("--etcd-password-file <file>", "file holding the etcd password", "NGINX_LB_ETCD_PASSWORD_FILE"));
}

/**
 * The etcd endpoint URLs: --etcd-endpoints, else the original image's HOST_IP + ETCD_PORT (http://HOST_IP:ETCD_PORT),
 * else none.
 */
export function etcdUrls(flags: EtcdFlags, env: NodeJS.ProcessEnv): string[] {
  if (flags.etcdEndpoints)
    return flags.etcdEndpoints
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  const host = env["HOST_IP"];
  if (host) return [`http://${host.includes(":") ? `[${host}]` : host}:${env["ETCD_PORT"] || "2379"}`];
  return [];
}

/**
 * Turns the flags (and the password: --etcd-password-file, else $NGINX_LB_ETCD_PASSWORD) into the etcd options; a
 * user without a password is caught by checkEtcdOptions, which every command that connects runs.
 */
export async function etcdConfigFromFlags(flags: EtcdFlags, env: NodeJS.ProcessEnv): Promise<Checked<EtcdOptions>> {
  const errors: Problem[] = [];
  let password: string | undefined;
  if (flags.etcdPasswordFile) {
    try {
      // One trailing newline is how editors and `echo` leave the file; it is not part of the password.
      password = (await readFile(flags.etcdPasswordFile, "utf8")).replace(/\r?\n$/, "");
    } catch (e) {
      errors.push({ code: "etcd_auth", path: "--etcd-password-file", message: (e as Error).message });
    }
  } else password = env[PASSWORD_ENV];
  if (!flags.etcdUsername && flags.etcdPasswordFile)
    errors.push({ code: "etcd_auth", path: "--etcd-password-file", message: "needs --etcd-username" });
  if (errors.length > 0) return { ok: false, errors, warnings: [] };
  return {
    ok: true,
    value: {
      etcdUrls: etcdUrls(flags, env),
      prefix: flags.etcdPrefix ?? DEFAULT_PREFIX,
      api: flags.etcdApi === "v2" ? "v2" : "v3",
      ...(flags.etcdCacert ? { cacert: flags.etcdCacert } : {}),
      ...(flags.etcdCert ? { cert: flags.etcdCert } : {}),
      ...(flags.etcdKey ? { key: flags.etcdKey } : {}),
      ...(flags.etcdUsername ? { username: flags.etcdUsername } : {}),
      ...(flags.etcdUsername && password !== undefined ? { password } : {}),
    },
    warnings: [],
  };
}
