import type { TopologyEndpoint } from "../reconciler/topology.js";
import type { StatusView } from "../admin/view.js";
import { fetchStatusView, type AdminClientFlags } from "./admin-client.js";

export { adminBaseUrl } from "./admin-client.js";

export interface StatusFlags extends AdminClientFlags {
  json?: boolean;
}

const useColor = Boolean(process.stdout.isTTY) && !process.env["NO_COLOR"];
const paint = (code: number, s: string) => (useColor ? `\x1b[${code}m${s}\x1b[0m` : s);
const green = (s: string) => paint(32, s);
const red = (s: string) => paint(31, s);
const yellow = (s: string) => paint(33, s);
const dim = (s: string) => paint(2, s);
// eslint-disable-next-line no-control-regex
const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "").length;

/** Lays out rows as aligned columns under a header. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ""))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c + " ".repeat(Math.max(0, (widths[i] ?? 0) - visible(c))))
      .join("  ")
      .trimEnd();
  return [dim(line(header)), ...rows.map(line)].join("\n");
}

const ok = (good: boolean, yes: string, no: string) => (good ? green(yes) : red(no));
// Thousands of registry warnings (one per bad key) would bury the tables: the JSON has them all.
const MAX_PROBLEM_ROWS = 50;

/** Why a script should not trust this controller (exit 1), or null when it is ready with valid inputs. */
export function unhealthy(s: StatusView): string | null {
  const why = [
    ...(s.ready.ready ? [] : [`not ready: ${s.ready.why}`]),
    ...(s.services.valid
      ? []
      : [`the routing file ${s.services.file} is invalid (the last valid routes stay in force)`]),
    ...(s.services.pending
      ? [
          `a routing change is pending: nginx refused it (${s.services.pending.error}); the routes in force serve, it is retried`,
        ]
      : []),
    ...(s.waiting ? [s.waiting] : []),
    ...(s.routes?.kind === "etcd" && s.routes.rejected.length > 0
      ? [
          `${s.routes.rejected.length} routing key(s) under ${s.routes.prefix} rejected (${s.routes.rejected.map((r) => r.key).join(", ")})`,
        ]
      : []),
    // An older controller does not report `valid`: nothing rejected then.
    ...(s.registry.valid === false
      ? [`the registry content is invalid (${s.registry.kind}; the endpoints in force stay)`]
      : []),
  ];
  return why.length ? why.join("; ") : null;
}

/** Renders the status view as terminal tables. */
export function formatStatus(s: StatusView): string {
  const out: string[] = [];
  out.push(
    table(
      ["PART", "STATE", "DETAIL"],
      [
        ["ready", ok(s.ready.ready, "yes", "no"), s.ready.why],
        [
          "nginx",
          ok(s.nginx.running, "running", "down"),
          s.nginx.running ? `pid ${s.nginx.pid}` : (s.nginx.lastError ?? ""),
        ],
        s.routes?.kind === "etcd"
          ? [
              "routes",
              s.routes.connected ? green("etcd") : red("etcd disconnected"),
              `${s.routes.prefix} at revision ${s.routes.revision}: ${s.routes.keys} key(s), ${s.routes.rejected.length} rejected (${s.routes.origin})`,
            ]
          : ["routing file", ok(s.services.valid, "valid", "invalid"), s.services.file],
        ...(s.services.pending
          ? [
              [
                "routing change",
                red("pending"),
                `since ${s.services.pending.since}, next try ${s.services.pending.nextRetryAt}: ${s.services.pending.error.split("\n")[0] ?? ""}`,
              ],
            ]
          : []),
        ...(s.waiting ? [["waiting", yellow("yes"), s.waiting]] : []),
        [
          "registry",
          s.registry.valid === false
            ? red("invalid")
            : s.registry.connected
              ? green("connected")
              : s.registry.kind === "none"
                ? yellow("none")
                : red("disconnected"),
          `${s.registry.kind}: ${s.registry.origin}`,
        ],
        [
          "last apply",
          s.lastSuccessAt ? green("ok") : yellow("never"),
          s.secondsSinceLastSuccess === null ? "" : `${s.secondsSinceLastSuccess}s ago`,
        ],
      ],
    ),
  );
  const rows: string[][] = [];
  for (const server of s.servers)
    for (const r of server.routes) {
      const eps = r.endpoints.length
        ? r.endpoints
            .map(
              (e) =>
                `${e.address} w${e.weight}${e.role === "primary" ? "" : ` ${e.role}`}${checkText(e)}${ejectedText(e)}`,
            )
            .join(", ")
        : red("none (503)");
      const t = r.traffic;
      rows.push([
        `${server.domain}:${server.port}${server.tlsPort ? `+tls:${server.tlsPort}` : ""}`,
        r.prefix,
        r.backend,
        eps,
        t ? `${t.requestsPerSecond}/s` : "-",
        t?.errorRate ? red(`${(t.errorRate * 100).toFixed(1)}%`) : t ? "0%" : "-",
      ]);
    }
  out.push("", table(["SERVER", "ROUTE", "BACKEND", "ENDPOINTS", "RATE", "5XX"], rows.length ? rows : [["(none)"]]));
  const rejected = s.routes?.kind === "etcd" ? s.routes.rejected : [];
  const problems = [
    ...s.servers.flatMap((server) =>
      server.routes.flatMap((r) => (r.failOpen ? [[yellow("warning"), "health check", r.label, r.failOpen]] : [])),
    ),
    ...rejected.flatMap((r) =>
      r.problems.map((p) => [
        red("rejected"),
        r.keptLastValid ? "etcd key (last valid serves)" : "etcd key (absent)",
        p.path,
        p.message,
      ]),
    ),
    ...s.services.errors.map((p) => [red("error"), "routing file", p.path, p.message]),
    ...(s.registry.errors ?? []).map((p) => [red("error"), "registry", p.path, p.message]),
    ...s.services.warnings.map((p) => [yellow("warning"), "routing file", p.path, p.message]),
    ...s.registry.warnings.map((p) => [yellow("warning"), "registry", p.path, p.message]),
  ];
  if (problems.length) {
    out.push("", table(["PROBLEM", "SOURCE", "PATH", "MESSAGE"], problems.slice(0, MAX_PROBLEM_ROWS)));
    if (problems.length > MAX_PROBLEM_ROWS)
      out.push(dim(`... and ${problems.length - MAX_PROBLEM_ROWS} more (nginx-lb status --json lists them all)`));
  }
  out.push(
    "",
    table(
      ["TIME", "RESULT", "ACTION", "TOTAL", "REASON"],
      s.applies
        .slice(0, 10)
        .map((a) => [
          a.at.replace("T", " ").replace(/\.\d+Z$/, "Z"),
          a.result === "failed" ? red(a.result) : a.result === "applied" ? green(a.result) : dim(a.result),
          a.action,
          `${a.ms.total} ms`,
          a.error ? `${a.reason}: ${a.error.split("\n")[0] ?? ""}` : a.reason,
        ]),
    ),
  );
  return `${out.join("\n")}\n`;
}

/** An endpoint's health-check verdict for the ENDPOINTS column: `[up]`, `[unknown]`, or down with since and why. */
function checkText(e: TopologyEndpoint): string {
  const h = e.health;
  if (!h) return "";
  if (h.state !== "down") return ` [check ${h.state}]`;
  const since = h.since ? ` since ${h.since.replace("T", " ").replace(/\.\d+Z$/, "Z")}` : "";
  return ` ${red(`[down by check${since}: ${h.reason ?? "?"}]`)}`;
}

/** An endpoint's outlier ejection for the ENDPOINTS column: since, until and why, or nothing. */
function ejectedText(e: TopologyEndpoint): string {
  const ej = e.ejected;
  if (!ej) return "";
  const at = (iso: string) => iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
  return ` ${red(`[ejected by traffic since ${at(ej.since)} until ${at(ej.until)}: ${ej.reason}]`)}`;
}

/** `nginx-lb status`: reads /api/status of a running controller and prints it. */
export async function statusCommand(flags: StatusFlags): Promise<number> {
  const fetched = await fetchStatusView(flags);
  if (!fetched.ok) {
    console.error(`nginx-lb status: ${fetched.why}`);
    return 2;
  }
  const view = fetched.view;
  process.stdout.write(flags.json ? `${JSON.stringify(view, null, 2)}\n` : formatStatus(view));
  const why = unhealthy(view);
  if (why) console.error(`nginx-lb status: ${why}`);
  return why ? 1 : 0;
}
