/**
 * The Prometheus alert rules and the Grafana dashboard in deploy/: promtool accepts the rules and their unit tests
 * pass, the dashboard's queries parse, and every metric, label and label value they use is one a real `nginx-lb run`
 * exports (a scrape of its /metrics after traffic of every status kind).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { sample, startAdminLb, type AdminLb } from "../helpers/admin.js";
import { startBackends, type BackendPool } from "../helpers/backends.js";
import { eventually, stopAllControllers } from "../helpers/controller.js";
import { get } from "../helpers/http.js";
import { cleanupNginx, tempDir } from "../helpers/nginx.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const RULES = join(ROOT, "deploy/prometheus/nginx-lb.rules.yml");
const RULE_TESTS = join(ROOT, "deploy/prometheus/nginx-lb.rules.test.yml");
const DASHBOARD = join(ROOT, "deploy/grafana/nginx-lb.json");

const promtool = (...args: string[]) =>
  new Promise<{ code: number; out: string }>((resolve) =>
    execFile("promtool", args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, out: stdout + stderr }),
    ),
  );

/** The `expr:` of every rule: one line, or a folded block (`>-`) of the lines indented below it. */
function ruleExprs(yaml: string): string[] {
  const lines = yaml.split("\n");
  const out: string[] = [];
  lines.forEach((line, i) => {
    const m = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (!m) return;
    const [, indent = "", value = ""] = m;
    if (value !== ">-") return void out.push(value);
    const block: string[] = [];
    for (const next of lines.slice(i + 1)) {
      if (next.trim() !== "" && next.search(/\S/) <= indent.length) break;
      block.push(next.trim());
    }
    out.push(block.join(" ").trim());
  });
  return out;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { refId: string; expr: string }[];
  gridPos: { x: number; y: number; w: number; h: number };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string }[] };
};
/** Grafana's variables as Prometheus would see them after substitution. */
const substitute = (expr: string) => expr.replaceAll("$__rate_interval", "5m").replaceAll("$instance", ".*");
const dashboardExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => substitute(t.expr)));
const alertExprs = ruleExprs(readFileSync(RULES, "utf8"));

interface Selector {
  metric: string;
  matchers: { label: string; value: string }[];
}

/** The metric selectors of a PromQL expression (ours: metric names with optional matchers) and grouping labels. */
function parse(expr: string): { selectors: Selector[]; grouping: string[]; rated: string[] } {
  const grouping = [...expr.matchAll(/\b(?:by|on|without|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) =>
    (m[1] ?? "").split(",").map((l) => l.trim()),
  );
  const rest = expr.replace(/\b(?:by|on|without|ignoring)\s*\([^)]*\)/g, " ").replace(/\[[^\]]*\]/g, " ");
  const selectors = [...rest.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?/g)]
    .filter((m) => !m[3] && !["and", "or", "unless", "bool", "offset"].includes(m[1] ?? ""))
    .map((m) => ({
      metric: m[1] ?? "",
      matchers: [...(m[2] ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map((x) => ({
        label: x[1] ?? "",
        value: x[2] ?? "",
      })),
    }));
  const rated = [...rest.matchAll(/\b(?:rate|irate|increase)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/g)].map(
    (m) => m[1] ?? "",
  );
  return { selectors, grouping, rated };
}

describe("alert rules", () => {
  test("promtool check rules accepts them, one per expression found here", async () => {
    const r = await promtool("check", "rules", RULES);
    expect(r.out).toContain(`SUCCESS: ${alertExprs.length} rules found`);
    expect(r.code).toBe(0);
    const names = [...readFileSync(RULES, "utf8").matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    expect(names).toEqual(
      expect.arrayContaining([
        "NginxLbNginxNotRunning",
        "NginxLbServicesInvalid",
        "NginxLbRegistryDisconnected",
        "NginxLbRegistryInvalid",
        "NginxLbAppliesFailing",
        "NginxLbNoSuccessfulApply",
        "NginxLbRoute5xxRatioHigh",
      ]),
    );
  });

  test("promtool test rules: each alert fires on its condition and stays quiet otherwise", async () => {
    const r = await promtool("test", "rules", RULE_TESTS);
    expect(r.out).toContain("SUCCESS");
    expect(r.code).toBe(0);
    // Every alert is covered by a unit test.
    const tested = new Set([...readFileSync(RULE_TESTS, "utf8").matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    for (const [, name] of readFileSync(RULES, "utf8").matchAll(/- alert: (\w+)/g)) expect(tested).toContain(name);
  });
});

describe("Grafana dashboard", () => {
  test("is an importable dashboard: uid, datasource and instance variables, unique panel ids, no overlap", () => {
    expect(dashboard.uid).toBe("nginx-lb");
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "instance"]);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels)
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
    for (const p of dashboard.panels.filter((p) => p.type !== "row"))
      expect(p.targets?.length ?? 0, p.title).toBeGreaterThan(0);
  });

  test("every query parses (promtool, as recording rules)", async () => {
    const dir = await tempDir("nginx-lb-dashboard-");
    const file = join(dir, "dashboard-queries.yml");
    const rules = dashboardExprs.map(
      (e, i) => `      - record: nginx_lb_dashboard:query_${i}\n        expr: ${JSON.stringify(e)}`,
    );
    await writeFile(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join("\n")}\n`);
    const r = await promtool("check", "rules", file);
    expect(r.out).toContain(`SUCCESS: ${dashboardExprs.length} rules found`);
    expect(r.code).toBe(0);
  });
});

describe("every metric the rules and the dashboard use is exported by `nginx-lb run`", () => {
  let pool: BackendPool;
  let lb: AdminLb;
  let metrics = "";
  beforeAll(async () => {
    pool = await startBackends(["127.0.0.2", "127.0.0.3"]);
    lb = await startAdminLb({
      pool,
      endpoints: { "web-api": { "127.0.0.2": { weight: 1 } }, "api-api": { "127.0.0.3": { weight: 1 } } },
    });
    // Traffic of every kind: an answer from a backend, a 503 of a route without endpoints, a Host no server names.
    expect((await lb.site("/")).status).toBe(200);
    expect((await lb.site("/gone")).status).toBe(503);
    const unknown = await get(`http://127.0.0.1:${lb.sitePort}/`, { host: "nobody.test" });
    expect(unknown.status).toBe(404);
    metrics = await eventually(
      async () => {
        const text = (await lb.admin("/metrics")).body;
        const seen =
          (sample(text, "nginx_lb_route_requests_total", { class: "5xx" }) ?? 0) > 0 &&
          (sample(text, "nginx_lb_traffic_records_ignored_total", { reason: "no_route" }) ?? 0) > 0;
        return seen ? text : null;
      },
      20_000,
      "the traffic in /metrics",
    );
  });
  afterAll(async () => {
    await stopAllControllers();
    await pool?.close();
    await cleanupNginx();
  });

  /** Metric families of the scrape: type, help, and the label sets of their samples. */
  const families = () => {
    const out = new Map<string, { type: string; help: string; series: Record<string, string>[] }>();
    for (const [, name = "", type = ""] of metrics.matchAll(/^# TYPE (\S+) (\S+)$/gm))
      out.set(name, { type, help: "", series: [] });
    for (const [, name = "", help = ""] of metrics.matchAll(/^# HELP (\S+) (.*)$/gm)) {
      const f = out.get(name);
      if (f) f.help = help;
    }
    for (const [, name = "", labels = ""] of metrics.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? \S+$/gm)) {
      const family =
        out.get(name) ?? out.get(name.replace(/_(bucket|sum|count)$/, "")) ?? out.get(name.replace(/_total$/, ""));
      family?.series.push(
        Object.fromEntries([...labels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]])),
      );
    }
    return out;
  };

  /** The family a selector names: itself, or the histogram it is a _bucket/_sum/_count series of. */
  const familyOf = (name: string) => {
    const f = families();
    const base = name.replace(/_(bucket|sum|count)$/, "");
    if (f.has(name)) return { name, family: f.get(name), series: name };
    if (base !== name && f.get(base)?.type === "histogram") return { name: base, family: f.get(base), series: name };
    return { name, family: undefined, series: name };
  };

  test.each([
    ["alert rules", alertExprs],
    ["dashboard", dashboardExprs],
  ])("%s: metric names, label names and values, counters under rate()", (_what, exprs) => {
    expect(exprs.length).toBeGreaterThan(0);
    const used = new Set<string>();
    for (const expr of exprs) {
      const { selectors, grouping, rated } = parse(expr);
      expect(selectors.length, expr).toBeGreaterThan(0);
      for (const s of selectors) {
        // `up` is Prometheus's own series per scrape target; job and instance are the target's labels.
        if (s.metric === "up") continue;
        const { name, family } = familyOf(s.metric);
        expect(family, `${s.metric} in ${expr}`).toBeDefined();
        used.add(name);
        const series = family?.series ?? [];
        for (const { label, value } of s.matchers) {
          if (label === "instance" || label === "job") continue;
          const values = series.map((x) => x[label]);
          expect(
            values.some((v) => v !== undefined),
            `label ${label} of ${s.metric}`,
          ).toBe(true);
          // A value no sample of a healthy run has (result="failed") must be one the metric's help names.
          if (!values.includes(value)) expect(family?.help, `${s.metric}{${label}="${value}"}`).toContain(value);
        }
      }
      const labels = new Set(
        selectors.flatMap((s) => (familyOf(s.metric).family?.series ?? []).flatMap((x) => Object.keys(x))),
      );
      for (const l of grouping)
        if (!["job", "instance"].includes(l)) expect([...labels], `${l} in ${expr}`).toContain(l);
      for (const r of rated) {
        const { family } = familyOf(r);
        expect(["counter", "histogram"], `rate() of ${r}`).toContain(family?.type);
      }
    }
    expect(used.size).toBeGreaterThan(3);
  });
});
