#!/usr/bin/env node
import { Command } from "commander";
import { addEtcdOptions } from "./etcd-options.js";
import type { RegisterFlags } from "./register.js";

/** The thin CLI: flags -> one command module (loaded lazily) -> exit code. */
const program = new Command()
  .name("nginx-lb")
  .description("Keeps a real nginx load-balancing the routes of services.json over the endpoints in etcd.")
  .version("0.1.0")
  .showHelpAfterError();

const exit = (code: number) => {
  process.exitCode = code;
};

program
  .command("validate")
  .description("check a services.json file; exit 0 when valid, 1 with every error (JSON path and fix) on stderr")
  .argument("<file>", "services.json to check")
  .action(async (file: string) => exit(await (await import("./validate.js")).validateCommand(file)));

program
  .command("render")
  .description("render nginx.conf from services.json and a backends file; print it, or write it with its TLS files")
  .requiredOption("--services <file>", "services.json")
  .option("--backends <file>", 'embedded registry file: { "<app>-<service>": { "<ip>": { "weight": 50 } } }')
  .option("--out <dir>", "write nginx.conf and TLS files (mode 0600) into this directory instead of printing")
  .option(
    "--dir <dir>",
    "directory the printed config refers to for TLS files, logs and temp files",
    "/var/lib/nginx-lb",
  )
  .action(async (flags: { services: string; backends?: string; out?: string; dir?: string }) =>
    exit(await (await import("./render.js")).renderCommand(flags)),
  );

program
  .command("schema")
  .description("print the JSON Schema of services.json, for editors")
  .action(async () => exit((await import("./schema.js")).schemaCommand()));

program
  .command("example")
  .description("the Quick start: render the bundled example and check it with the real nginx -t")
  .action(async () => exit(await (await import("./example.js")).exampleCommand()));

const registerCommand = (name: string, description: string) =>
  addEtcdOptions(
    program
      .command(name)
      .description(description)
      .requiredOption("--app <name>", "application name")
      .requiredOption("--service <name>", "service name (the backend is <app>-<service>)")
      .requiredOption("--ip <address>", "the endpoint's IPv4 or IPv6 address"),
  );

registerCommand("register", "put an endpoint into etcd on a lease, renewed while this runs, deleted on SIGTERM/SIGINT")
  .option("--weight <n>", "weight 0..1000 (0: drained)", "50")
  .option("--ttl <seconds>", "lease TTL: the key vanishes this long after the process dies", "30")
  .action(async (flags: RegisterFlags) => exit(await (await import("./register.js")).registerCommand(flags)));

registerCommand("deregister", "delete an endpoint from etcd").action(async (flags: RegisterFlags) =>
  exit(await (await import("./deregister.js")).deregisterCommand(flags)),
);

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`nginx-lb: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 2;
});
