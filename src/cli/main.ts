#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Argument, Command, Option } from "commander";
import { addEtcdOptions } from "./etcd-options.js";
import type { RegisterFlags } from "./register.js";
import { RUN_DEFAULTS } from "./run-config.js";

/** The package's version, from the package.json beside src/ and dist/: one source for `--version` and `version`. */
const VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** The thin CLI: flags -> one command module (loaded lazily) -> exit code. */
const program = new Command()
  .name("nginx-lb")
  .description("Keeps a real nginx load-balancing the routes of services.json over the endpoints in etcd.")
  .version(VERSION)
  .showHelpAfterError()
  // Usage errors (unknown option, missing argument) exit 2, like getopt tools; --help and --version exit 0.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

const exit = (code: number) => {
  process.exitCode = code;
};

program
  .command("validate")
  .description(
    "check a services.json file; exit 0 when valid, 1 with every error (JSON path and fix) on stderr, 2 when FILE cannot be read",
  )
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
  .addOption(
    new Option(
      "--endpoints-mode <mode>",
      "dynamic or reload; default: what `run` would choose here (dynamic when nginx has the Lua module)",
    ).choices(["dynamic", "reload", "auto"]),
  )
  .addOption(
    new Option(
      "--routes-mode <mode>",
      "as `run --routes-mode`: dynamic (one server per port, routes pushed) or reload; default: what `run` would " +
        "choose here (dynamic with dynamic endpoints)",
    ).choices(["dynamic", "reload"]),
  )
  .option("--nginx <path>", "nginx binary whose Lua support decides the default mode, as `run --nginx`")
  .option("--listen-host <ip>", "address frontend ports listen on, as `run --listen-host` (default: all)")
  .option("--worker-processes <n>", "nginx worker_processes, as `run --worker-processes`")
  .option("--nginx-user <user>", "as `run --nginx-user` (as root the workers' user: default www-data, else nobody)")
  .option("--control-port <port>", "the control port `run` uses (its state dir's state.json; default: a placeholder)")
  .action(async (flags: import("./render.js").RenderFlags) =>
    exit(await (await import("./render.js")).renderCommand(flags)),
  );

program
  .command("schema")
  .description("print the JSON Schema of services.json, for editors")
  .action(async () => exit((await import("./schema.js")).schemaCommand()));

const env = (flag: string, description: string, name: string) => new Option(flag, description).env(`NGINX_LB_${name}`);
// run's defaults live in resolveRunConfig; the help only shows them.
const dflt = (value: string) => ` (default: ${value})`;
addEtcdOptions(program.command("run"))
  .description("the daemon: keep nginx serving services.json over the registry's endpoints, through every change")
  .addOption(
    env(
      "--services <file>",
      `services.json (re-read on SIGUSR2 and on change)${dflt(RUN_DEFAULTS.services)}`,
      "SERVICES",
    ),
  )
  .addOption(env("--backends <file>", "embedded registry file instead of etcd (watched)", "BACKENDS"))
  .addOption(
    env(
      "--services-etcd-prefix <key>",
      "read the routing table from etcd (v3), one key per server <key>/<domain>:<port>, instead of --services",
      "SERVICES_ETCD_PREFIX",
    ),
  )
  .addOption(
    env(
      "--state-dir <dir>",
      `nginx.conf, TLS files, logs and the last applied state; closed to other users${dflt(RUN_DEFAULTS.stateDir)}`,
      "STATE_DIR",
    ),
  )
  .addOption(env("--nginx <path>", "nginx binary", "NGINX"))
  .addOption(env("--listen-host <ip>", "address frontend ports listen on (default: all)", "LISTEN_HOST"))
  .addOption(
    env(
      "--control-port <port>",
      "loopback port of nginx's internal control server (default: chosen once, kept in the state dir)",
      "CONTROL_PORT",
    ),
  )
  .addOption(env("--worker-processes <n>", "nginx worker_processes", "WORKER_PROCESSES"))
  .addOption(
    env(
      "--nginx-user <user>",
      "when run as root: the unprivileged user nginx's workers run as (default: www-data, else nobody)",
      "NGINX_USER",
    ),
  )
  .addOption(
    env(
      "--endpoints-mode <mode>",
      "dynamic (pushed to nginx, no reload) or reload; default: dynamic when nginx has the Lua module",
      "ENDPOINTS_MODE",
    ).choices(["dynamic", "reload", "auto"]),
  )
  .addOption(
    env(
      "--routes-mode <mode>",
      "dynamic (routing changes pushed to nginx's Lua router: one server per port, no reload; needs dynamic " +
        "endpoints) or reload (rendered per site); default: dynamic where dynamic endpoints run, else reload",
      "ROUTES_MODE",
    ).choices(["dynamic", "reload"]),
  )
  .addOption(env("--no-watch", "re-read services.json only on SIGUSR2/SIGHUP, not when the file changes", "NO_WATCH"))
  .addOption(env("--log-level <level>", `trace, debug, info, warn, error${dflt(RUN_DEFAULTS.logLevel)}`, "LOG_LEVEL"))
  .addOption(
    env(
      "--admin-listen <host:port>",
      "admin server (dashboard, /metrics, /api/status; default 127.0.0.1:9180; off to disable)",
      "ADMIN_LISTEN",
    ),
  )
  .addOption(
    env(
      "--admin-token-file <file>",
      "file holding the admin bearer token (else $NGINX_LB_ADMIN_TOKEN; never a flag: ps shows flags to everyone)",
      "ADMIN_TOKEN_FILE",
    ),
  )
  .addOption(
    env(
      "--health-listen <host:port>",
      "also serve only /readyz and /healthz here, without a token, for the layer in front (e.g. 0.0.0.0:9181; " +
        "default: off)",
      "HEALTH_LISTEN",
    ),
  )
  // Removed: a token in argv is visible in ps. Still parsed (never from the environment) to refuse it clearly.
  .addOption(new Option("--admin-token [token]").hideHelp())
  .addOption(
    env("--no-traffic-log", "no per-route or per-endpoint traffic figures (nginx counts nothing)", "NO_TRAFFIC_LOG"),
  )
  .addOption(
    env(
      "--access-log <file>",
      `nginx's access log: one JSON line per request (time, client, host, method, uri, status, bytes, times, upstream, route), created 0600; off for none${dflt(RUN_DEFAULTS.accessLog)}`,
      "ACCESS_LOG",
    ),
  )
  .addOption(
    env(
      "--start-timeout <duration>",
      `how long start-up problems that may heal (a port a previous instance still holds while it drains) are ` +
        `retried before exiting 1; also how long etcd may stay silent before that is reported as an error ` +
        `(500ms, 30s, 2m or seconds)${dflt(RUN_DEFAULTS.startTimeout)}`,
      "START_TIMEOUT",
    ),
  )
  .addOption(
    env(
      "--outlier-ejection <spec>",
      `dynamic mode: <errors>,<first>,<longest>,<percent>%: an endpoint failing <errors> requests in a row (a 5xx it ` +
        `answers, a timeout, a connection error) is skipped for <first>, doubled on repeats up to <longest>; at most ` +
        `<percent> of a route's endpoints at once; off to turn it off ${dflt(RUN_DEFAULTS.outlierEjection)}`,
      "OUTLIER_EJECTION",
    ),
  )
  .action(async (flags: import("./run-config.js").RunFlags) =>
    exit(await (await import("./run.js")).runCommand(flags)),
  );

program
  .command("status")
  .description(
    "print a running nginx-lb's status as tables; exit 0 when ready with valid inputs, 1 when not, 2 when unreachable",
  )
  .addOption(env("--admin <url>", "admin server URL or HOST:PORT", "ADMIN_URL").default("http://127.0.0.1:9180"))
  .addOption(env("--admin-token-file <file>", "file holding the admin bearer token", "ADMIN_TOKEN_FILE"))
  .option("--json", "print the raw JSON instead")
  .action(async (flags: import("./status.js").StatusFlags) =>
    exit(await (await import("./status.js")).statusCommand(flags)),
  );

program
  .command("diff")
  .description(
    "show what applying a routing file would change in a running nginx-lb (servers, routes, upstreams), without " +
      "applying it; exit 0 when nothing would, 1 when something would, 2 when nothing could be compared (usage, " +
      "an unreadable or invalid FILE, an unreachable controller)",
  )
  .requiredOption("--services <file>", "the routing file (services.json) to compare")
  .addOption(env("--admin <url>", "admin server URL or HOST:PORT", "ADMIN_URL").default("http://127.0.0.1:9180"))
  .addOption(env("--admin-token-file <file>", "file holding the admin bearer token", "ADMIN_TOKEN_FILE"))
  .action(async (flags: import("./diff.js").DiffFlags) => exit(await (await import("./diff.js")).diffCommand(flags)));

program
  .command("example")
  .description("the Quick start: run a live load balancer on the bundled example (examples/) with example backends")
  .option("--check", "only render the example and check it with the real nginx -t")
  .action(async (flags: { check?: boolean }) => exit(await (await import("./example.js")).exampleCommand(flags)));

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

const services = program
  .command("services")
  .description(
    "the routing table in etcd (read by `run --services-etcd-prefix`): push, get, diff, set, delete, history, rollback; every write " +
      "is validated as services.json and fails if another writer changed the table since it was read",
  );
const servicesCommand = (name: string, description: string) =>
  addEtcdOptions(
    services
      .command(name)
      .description(description)
      .addOption(
        env("--services-etcd-prefix <key>", "where the table lives", "SERVICES_ETCD_PREFIX").default("/lb/services"),
      ),
    { endpointsRequired: true },
  );
type ServicesFlags = import("./services.js").ServicesFlags;
servicesCommand(
  "push",
  "make the table in etcd equal a services.json: validate it (TLS included), print the diff, write it guarded; " +
    "exit 1 when invalid or another writer got there first",
)
  .argument("<file>", "services.json to push")
  .option("--dry-run", "validate and print the diff only")
  .action(async (file: string, flags: ServicesFlags) =>
    exit(await (await import("./services.js")).servicesPushCommand(file, flags)),
  );
servicesCommand("get", "print the table as a services.json (it pushes back unchanged)")
  .option("--out <file>", "write it to this file (mode 0600: it holds TLS keys) instead of stdout")
  .action(async (flags: ServicesFlags) => exit(await (await import("./services.js")).servicesGetCommand(flags)));
servicesCommand("diff", "print what `services push FILE` would change; exit 0 when nothing, 1 when something")
  .argument("<file>", "services.json to compare")
  .action(async (file: string, flags: ServicesFlags) =>
    exit(await (await import("./services.js")).servicesDiffCommand(file, flags)),
  );
servicesCommand("set", "put one server (its object as in services.json's servers), validated against the table")
  .argument("<file>", "JSON file holding one server object")
  .action(async (file: string, flags: ServicesFlags) =>
    exit(await (await import("./services.js")).servicesSetCommand(file, flags)),
  );
servicesCommand("delete", "delete one server from the table")
  .argument("<server>", "DOMAIN:PORT (its domain_name and frontend_port)")
  .action(async (name: string, flags: ServicesFlags) =>
    exit(await (await import("./services.js")).servicesDeleteCommand(name, flags)),
  );

servicesCommand(
  "history",
  "the revisions etcd still keeps at which the table changed (+ added, ~ changed, - deleted)",
).action(async (flags: ServicesFlags) => exit(await (await import("./services.js")).servicesHistoryCommand(flags)));
servicesCommand("rollback", "make the table what it was at an etcd revision: a validated, guarded push of that table")
  .requiredOption("--revision <n>", "the etcd revision (nginx-lb services history lists them)")
  .option("--dry-run", "validate and print the diff only")
  .action(async (flags: ServicesFlags & { revision?: string }) =>
    exit(await (await import("./services.js")).servicesRollbackCommand(flags)),
  );

program
  .command("version")
  .description("print nginx-lb's version (the same as --version)")
  .action(() => {
    console.log(VERSION);
    exit(0);
  });

program
  .command("completion")
  .description("print a shell completion script: source <(nginx-lb completion bash)")
  .addArgument(new Argument("<shell>", "the shell to complete for").choices(["bash"]))
  .action(async (shell: string) => exit((await import("./completion.js")).completionCommand(program, shell)));

/** The stack of an unexpected throw is for developers: shown with --log-level debug/trace or NGINX_LB_DEBUG set. */
const debugging = () =>
  Boolean(process.env["NGINX_LB_DEBUG"]) ||
  process.argv.some(
    (a, i) =>
      /^--log-level=(debug|trace)$/.test(a) ||
      (a === "--log-level" && /^(debug|trace)$/.test(process.argv[i + 1] ?? "")),
  ) ||
  /^(debug|trace)$/.test(process.env["NGINX_LB_LOG_LEVEL"] ?? "");

program.parseAsync(process.argv).catch((e: unknown) => {
  const error = e instanceof Error ? e : new Error(String(e));
  console.error(`nginx-lb: ${debugging() ? (error.stack ?? error.message) : error.message}`);
  process.exitCode = 1;
});
