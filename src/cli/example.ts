import { constants } from "node:fs";
import { access, mkdtemp } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { homedir, tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { findNginx, nginxTest } from "../nginx/binary.js";
import { describeHolder, findPortHolder } from "../nginx/port-holder.js";
import { loadBackendsFile } from "../sources/services-file.js";
import { renderCommand } from "./render.js";
import { runCommand } from "./run.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SERVICES = join(root, "examples/services.json");
const BACKENDS = join(root, "examples/backends.json");

/** `example --check`: renders the bundled example and checks it with the real `nginx -t`. */
async function check(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), "nginx-lb-example-"));
  const code = await renderCommand({ services: SERVICES, backends: BACKENDS, out: dir });
  if (code !== 0) return code;
  const t = await nginxTest(findNginx(), join(dir, "nginx.conf"), dir);
  console.error(t.ok ? `nginx -t: the configuration in ${dir}/nginx.conf is valid` : `nginx -t failed:\n${t.output}`);
  return t.ok ? 0 : 1;
}

/** Small HTTP backends for the example's endpoints, each answering with its own address and the path it got. */
async function startExampleBackends(): Promise<Server[]> {
  const set = await loadBackendsFile(BACKENDS);
  if (!set.ok) throw new Error(`examples/backends.json is invalid: ${set.errors.map((e) => e.message).join("; ")}`);
  const servers: Server[] = [];
  const ips = new Set(Object.values(set.value).flatMap((eps) => Object.keys(eps)));
  for (const ip of ips)
    for (const port of [9001, 9002, 9003]) {
      const srv = createServer((req, res) => {
        res.setHeader("content-type", "application/json");
        res.end(`${JSON.stringify({ backend: `${ip}:${port}`, path: req.url, host: req.headers.host })}\n`);
      });
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(port, ip, () => resolve());
      });
      servers.push(srv);
    }
  return servers;
}

/**
 * In a checkout the example keeps its state beside it (`.state/example`); a global install's package dir belongs to
 * root, so there it lives in the user's state dir instead.
 */
async function exampleStateDir(): Promise<string> {
  try {
    await access(root, constants.W_OK);
    return join(root, ".state/example");
  } catch {
    return join(process.env["XDG_STATE_HOME"] ?? join(homedir(), ".local/state"), "nginx-lb/example");
  }
}

/** The Quick start: the bundled example as a live load balancer on 127.0.0.1:8080 and :8443, until Ctrl-C. */
export async function exampleCommand(flags: { check?: boolean }): Promise<number> {
  if (flags.check) return check();
  // A second example (or anything else on its ports) would otherwise wait out the start timeout: say it at once.
  for (const port of [8080, 8443]) {
    const holder = await findPortHolder(port);
    if (holder) {
      console.error(
        `nginx-lb example: port ${port} is in use, ${describeHolder(holder)}: stop it first (another nginx-lb example? Ctrl-C it)`,
      );
      return 1;
    }
  }
  let backends: Server[];
  try {
    backends = await startExampleBackends();
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
    if (err.code !== "EADDRINUSE" || err.port === undefined) throw e;
    const holder = await findPortHolder(err.port);
    console.error(
      `nginx-lb example: the example backend address ${err.address ?? ""}:${err.port} is in use` +
        `${holder ? `, ${describeHolder(holder)}` : ""}: stop it first (another nginx-lb example? Ctrl-C it)`,
    );
    return 1;
  }
  const stateDir = await exampleStateDir();
  console.error(
    [
      "nginx-lb example: a live load balancer on the bundled example (Ctrl-C stops it)",
      "  curl -H 'Host: demo.example.com' 'http://127.0.0.1:8080/foo?x=1'     # route / -> myapp-api, backend_path /v2",
      "  curl -H 'Host: demo.example.com' http://127.0.0.1:8080/suburl/x     # route /suburl -> myapp3-web",
      "  curl -H 'Host: test.example.com' http://127.0.0.1:8080/             # no endpoints: 503 naming the route",
      "  curl -k --resolve demo.example.com:8443:127.0.0.1 https://demo.example.com:8443/",
      "  open http://127.0.0.1:9180/ for the live dashboard (also /metrics, /api/status; or run: nginx-lb status)",
      `  edit examples/backends.json (endpoints) or examples/services.json (routes): changes apply live; state in ${stateDir}`,
    ].join("\n"),
  );
  const code = await runCommand({
    services: SERVICES,
    backends: BACKENDS,
    stateDir,
    listenHost: "127.0.0.1",
    etcdPrefix: "/lb/backends",
    etcdApi: "v3",
  });
  for (const b of backends) b.close();
  return code;
}
