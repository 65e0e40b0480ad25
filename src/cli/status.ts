import { readFileSync } from "node:fs";
import type { StatusView } from "../admin/view.js";

export interface StatusFlags {
  admin: string;
  adminTokenFile?: string;
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
        ["routing file", ok(s.services.valid, "valid", "invalid"), s.services.file],
        [
          "registry",
          s.registry.connected ? green("connected") : s.registry.kind === "none" ? yellow("none") : red("disconnected"),
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
        ? r.endpoints.map((e) => `${e.address} w${e.weight}${e.role === "primary" ? "" : ` ${e.role}`}`).join(", ")
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
  const problems = [
    ...s.services.errors.map((p) => [red("error"), p.path, p.message]),
    ...s.services.warnings.map((p) => [yellow("warning"), p.path, p.message]),
    ...s.registry.warnings.map((p) => [yellow("warning"), p.path, p.message]),
  ];
  if (problems.length) out.push("", table(["PROBLEM", "PATH", "MESSAGE"], problems));
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

/** `nginx-lb status`: reads /api/status of a running controller and prints it. */
export async function statusCommand(flags: StatusFlags): Promise<number> {
  const token =
    process.env["NGINX_LB_ADMIN_TOKEN"] ??
    (flags.adminTokenFile ? readFileSync(flags.adminTokenFile, "utf8").trim() : undefined);
  const url = new URL("api/status", flags.admin.endsWith("/") ? flags.admin : `${flags.admin}/`);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
    });
  } catch (e) {
    console.error(`nginx-lb status: cannot reach ${url.origin}: ${(e as Error).message}`);
    return 2;
  }
  if (!res.ok) {
    console.error(`nginx-lb status: ${url.href} answered ${res.status}: ${(await res.text()).trim()}`);
    return 2;
  }
  const view = (await res.json()) as StatusView;
  process.stdout.write(flags.json ? `${JSON.stringify(view, null, 2)}\n` : formatStatus(view));
  return view.ready.ready ? 0 : 1;
}
