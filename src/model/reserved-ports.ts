import { formatPath, type Problem } from "./problem.js";
import type { Services } from "./services.js";

/** A port nginx-lb itself listens on, which no server of the routing table may claim. */
export interface ReservedPort {
  readonly port: number;
  /** What holds it, as a message reads it: "nginx-lb's control port (127.0.0.1:9000)". */
  readonly use: string;
  /** What the operator does about a server that claims it. */
  readonly remedy: string;
}

/**
 * Servers that claim a reserved port. nginx accepts a frontend `listen` on the control server's address and port
 * without a word and then answers the controller's requests from the frontend server, so the clash must be refused
 * before rendering; each claim is an error at its own JSON path.
 */
export function reservedPortProblems(services: Services, reserved: readonly ReservedPort[]): Problem[] {
  if (reserved.length === 0) return [];
  const byPort = new Map(reserved.map((r) => [r.port, r]));
  const out: Problem[] = [];
  services.servers.forEach((s, i) => {
    const claims: [number | undefined, string][] = [
      [s.port, "frontend_port"],
      [s.tls?.port, "ssl_port"],
    ];
    for (const [port, field] of claims) {
      const r = port === undefined ? undefined : byPort.get(port);
      if (r !== undefined)
        out.push({
          code: "reserved_port",
          path: formatPath(["servers", i, field]),
          message: `port ${r.port} is ${r.use}: ${r.remedy}`,
        });
    }
  });
  return out;
}

/**
 * The control port as a reserved port, when frontend servers listening on `listenHost` (`--listen-host`; absent:
 * every IPv4 address) also take connections to 127.0.0.1, where the control server listens. Another address,
 * loopback ones such as 127.0.0.2 included, or IPv6 (nginx listens IPv6-only there) is another socket: the port is
 * then free for a frontend server too. `requested`: `--control-port` chose it (a restart does not move it).
 */
export function controlPortReserved(port: number, listenHost: string | undefined, requested: boolean): ReservedPort[] {
  const sharesLoopback =
    listenHost === undefined || listenHost === "*" || listenHost === "0.0.0.0" || listenHost === "127.0.0.1";
  if (!sharesLoopback) return [];
  return [
    {
      port,
      use: `nginx-lb's control port (nginx's internal server on 127.0.0.1:${port})`,
      remedy: requested
        ? "choose another port for this server, or run nginx-lb with another --control-port"
        : "choose another port for this server, or restart nginx-lb: a restart moves the control port off every port the routing table names",
    },
  ];
}
