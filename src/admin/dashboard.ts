/**
 * The dashboard: one self-contained page (inline CSS and JS, no CDN, works offline). It reads /api/events (SSE,
 * falling back to polling /api/status) and draws every value with textContent, never as HTML.
 */

const STYLE = `
:root{--bg:#0f1419;--panel:#171d24;--panel2:#1d252e;--line:#2a343f;--text:#d7dee6;--dim:#8694a3;--ok:#3fb950;
--warn:#d29922;--bad:#f85149;--accent:#58a6ff;--backup:#a371f7;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}
header{display:flex;flex-wrap:wrap;align-items:center;gap:12px;padding:12px 20px;background:var(--panel);border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
h1{font-size:17px;margin:0 12px 0 0;letter-spacing:.3px}h1 span{color:var(--accent)}
.pill{display:inline-flex;align-items:center;gap:6px;padding:3px 10px;border-radius:999px;background:var(--panel2);border:1px solid var(--line);font-size:12.5px;white-space:nowrap}
.dot{width:8px;height:8px;border-radius:50%;background:var(--dim)}.ok .dot{background:var(--ok)}.bad .dot{background:var(--bad)}.warn .dot{background:var(--warn)}
.bad{border-color:#5a2a2a}.spacer{flex:1}.conn{font-size:12px;color:var(--dim)}.conn.ok{color:var(--ok)}.conn.bad{color:var(--bad)}.conn.warn{color:var(--warn)}
#applies td{white-space:nowrap}#applies td:last-child{white-space:normal;overflow-wrap:anywhere}
main{display:grid;grid-template-columns:minmax(0,1fr) 420px;gap:16px;padding:16px 20px}
@media (max-width:1100px){main{grid-template-columns:1fr}}
.tiles{display:grid;grid-template-columns:repeat(6,minmax(0,1fr));gap:10px;margin-bottom:14px}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.tile b{display:block;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}.tile small{color:var(--dim);font-size:12px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;margin-bottom:14px;overflow:hidden}
.card h2{margin:0;padding:10px 14px;font-size:14px;background:var(--panel2);border-bottom:1px solid var(--line);display:flex;gap:10px;align-items:center}
.card h2 .sub{color:var(--dim);font-weight:400;font-size:12.5px}
table{width:100%;border-collapse:collapse}th,td{padding:7px 12px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--dim);font-weight:500;font-size:12px;text-transform:uppercase;letter-spacing:.4px}
tr:last-child td{border-bottom:0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono{font-family:var(--mono);font-size:12.5px}.dim{color:var(--dim)}
.ep{display:inline-flex;align-items:center;gap:6px;margin:2px 6px 2px 0;padding:2px 8px;border-radius:5px;background:var(--panel2);border:1px solid var(--line);font-family:var(--mono);font-size:12px}
.ep i{font-style:normal;font-size:11px;padding:0 5px;border-radius:3px;color:#0f1419}
.ep.primary i{background:var(--ok)}.ep.backup i{background:var(--backup)}.ep.down{opacity:.6}.ep.down i{background:var(--dim)}
.ep .w{color:var(--dim)}.none{color:var(--bad);font-size:12.5px}
.hc{font-size:11px;padding:0 5px;border-radius:3px;border:1px solid var(--line)}.hc.up{color:var(--ok)}.hc.unknown{color:var(--dim)}.hc.down{background:var(--bad);color:#0f1419;border-color:var(--bad)}
.failopen{color:var(--warn);font-size:12.5px;margin-top:4px}
.err{color:var(--bad)}.warnc{color:var(--warn)}.okc{color:var(--ok)}
.badge{display:inline-block;padding:0 7px;border-radius:4px;font-size:12px;font-weight:600}
.badge.applied{background:#173a24;color:var(--ok)}.badge.failed{background:#3d1a1a;color:var(--bad)}.badge.unchanged{background:var(--panel2);color:var(--dim)}
.problem{padding:8px 14px;border-bottom:1px solid var(--line)}.problem:last-child{border-bottom:0}
.problem .path{font-family:var(--mono);font-size:12px;color:var(--accent)}
input[type=search]{background:var(--panel2);border:1px solid var(--line);color:var(--text);border-radius:6px;padding:5px 10px;width:240px}
svg.spark{width:90px;height:22px;vertical-align:middle}svg.spark polyline{fill:none;stroke:var(--accent);stroke-width:1.5}
.empty{padding:14px;color:var(--dim)}
`;

/** The route charts: a panel above the route tables, three SVG line charts drawn with DOM calls. */
const CHART_STYLE = `
tr[data-upstream]{cursor:pointer}tr[data-upstream]:hover td{background:#1a212a}tr.selected td{background:#1b2a3a}
#chart-panel h2 button{margin-left:auto;background:none;border:1px solid var(--line);color:var(--dim);border-radius:5px;padding:0 8px;cursor:pointer}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:4px 12px;padding:8px 12px 4px}
svg.chart{width:100%;height:auto;max-height:300px;display:block;font:10.5px system-ui,sans-serif}
svg.chart .grid{stroke:var(--line);stroke-width:1}svg.chart .axis{stroke:#46525f;stroke-width:1}
svg.chart text{fill:var(--dim)}svg.chart .ctitle{fill:var(--text);font-size:12px;font-weight:600}svg.chart .unit{fill:var(--text)}
svg.chart path.line{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}svg.chart path.area{stroke:none;opacity:.18}
svg.chart .s-rps{stroke:var(--accent);fill:var(--accent)}svg.chart .s-err{stroke:var(--bad);fill:var(--bad)}
svg.chart .s-p50{stroke:var(--accent);fill:var(--accent)}svg.chart .s-p99{stroke:var(--warn);fill:var(--warn)}
svg.chart .cursor{stroke:var(--dim);stroke-dasharray:2 2}svg.chart .readout{fill:var(--text)}
.chart-note{padding:0 14px 10px;color:var(--dim);font-size:12.5px}
`;

/**
 * Charts for the selected route: fetched from api/routes/<upstream>/series (one route, on demand) every bucket while
 * the panel is open. Every value reaches the page through setAttribute or textContent.
 */
const CHART_SCRIPT = `
const SVGNS = "http://www.w3.org/2000/svg";
const ROUTE_NAME = /^nlb_[0-9a-f]{16}(_[0-9]+)?$/;
let chartRoute = null, chartTimer = null, chartGen = 0;
function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}
// The y step: 1, 2, 2.5 or 5 times a power of ten, so that at most four steps reach the highest value.
function niceStep(max) {
  const raw = max > 0 ? max / 4 : 0.25;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5]) if (m * p >= raw * 0.9999) return m * p;
  return 10 * p;
}
const fmtTick = (v) => v >= 1000 ? +(v / 1000).toPrecision(4) + "k" : String(+v.toPrecision(4));
const fmtVal = (v) => v === null ? "\\u2013" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
// One chart: lines over the window, x from the oldest bucket to the newest (its end at the right edge).
function lineChart(spec) {
  const W = 320, H = 180, L = 42, R = 10, T = 38, B = 22, pw = W - L - R, ph = H - T - B;
  const n = spec.lines[0].values.length, end = Date.parse(spec.end), span = n * spec.bucketSeconds;
  let max = 0;
  for (const l of spec.lines) for (const v of l.values) if (v !== null && v > max) max = v;
  // Without any value above zero, a 0 to 1 axis (four steps): the line lies flat on it.
  const step = niceStep(max > 0 ? max : 1), ticks = Math.max(1, Math.ceil((max > 0 ? max : 1) / step - 1e-9)), top = step * ticks;
  const x = (i) => L + (pw * (i + 1)) / n;
  const y = (v) => T + ph - (ph * v) / top;
  const svg = svgEl("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "data-chart": spec.key, "aria-label": spec.title + " (" + spec.unit + "), last " + Math.round(span / 60) + " min" });
  svg.append(svgEl("text", { class: "ctitle", x: 4, y: 13 }, spec.title));
  svg.append(svgEl("text", { class: "unit", "data-unit": spec.unit, x: L - 6, y: T - 10, "text-anchor": "end" }, spec.unit));
  for (let k = 0; k <= ticks; k++) {
    const v = step * k;
    svg.append(svgEl("line", { class: k ? "grid" : "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(svgEl("text", { class: "tick y", x: L - 6, y: y(v) + 3.5, "text-anchor": "end" }, fmtTick(v)));
  }
  for (let m = 0; m * 60 <= span; m += 5) {
    const xm = L + pw * (1 - (m * 60) / span);
    if (m) svg.append(svgEl("line", { class: "grid", x1: xm, x2: xm, y1: T, y2: T + ph }));
    svg.append(svgEl("text", { class: "tick x", x: xm, y: H - 8, "text-anchor": m === 0 ? "end" : m * 60 >= span ? "start" : "middle" }, m === 0 ? "now" : "\\u2212" + m + " min"));
  }
  svg.append(svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: T + ph }));
  spec.lines.forEach((l, li) => {
    // A gap (no data, or no answer to take a latency from) breaks the line; a lone point still shows as a dot.
    let d = "", area = "", run = [];
    const flush = () => {
      if (!run.length) return;
      d += "M" + run.map(([px, py]) => px.toFixed(1) + " " + py.toFixed(1)).join("L") + (run.length === 1 ? "h0.01" : "");
      area += "M" + run[0][0].toFixed(1) + " " + y(0).toFixed(1) + "L" + run.map(([px, py]) => px.toFixed(1) + " " + py.toFixed(1)).join("L") + "L" + run[run.length - 1][0].toFixed(1) + " " + y(0).toFixed(1) + "Z";
      run = [];
    };
    l.values.forEach((v, i) => { if (v === null) flush(); else run.push([x(i), y(v)]); });
    flush();
    if (spec.area && area) svg.append(svgEl("path", { class: "area " + l.cls, d: area }));
    svg.append(svgEl("path", { class: "line " + l.cls, d: d || "M0 0", "data-series": l.name, "data-points": String(l.values.filter((v) => v !== null).length), "data-max": String(Math.max(0, ...l.values.filter((v) => v !== null))) }));
    if (spec.lines.length > 1) {
      const lx = W - R - 96 + li * 50;
      svg.append(svgEl("line", { class: "line " + l.cls, x1: lx, x2: lx + 14, y1: 10, y2: 10, "stroke-width": 2.5 }));
      svg.append(svgEl("text", { class: "legend", x: lx + 18, y: 13.5 }, l.name));
    }
  });
  // Hovering reads the values of one bucket.
  const cursor = svgEl("line", { class: "cursor", y1: T, y2: T + ph, visibility: "hidden" });
  const readout = svgEl("text", { class: "readout", x: W - R, y: T - 10, "text-anchor": "end" });
  const hit = svgEl("rect", { x: L, y: T, width: pw, height: ph, fill: "transparent" });
  hit.addEventListener("mousemove", (e) => {
    const box = svg.getBoundingClientRect();
    const i = Math.min(n - 1, Math.max(0, Math.round((((e.clientX - box.left) * W) / box.width - L) / (pw / n)) - 1));
    cursor.setAttribute("x1", String(x(i))); cursor.setAttribute("x2", String(x(i))); cursor.setAttribute("visibility", "visible");
    readout.textContent = clock(end - (n - 1 - i) * spec.bucketSeconds * 1000) + "  " + spec.lines.map((l) => (spec.lines.length > 1 ? l.name + " " : "") + fmtVal(l.values[i]) + " " + spec.unit).join("  ");
  });
  hit.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); readout.textContent = ""; });
  svg.append(cursor, readout, hit);
  return svg;
}
function drawCharts(data) {
  const panel = document.getElementById("chart-panel");
  const charts = document.getElementById("charts");
  const note = document.getElementById("chart-note");
  note.textContent = data.note || "";
  document.getElementById("chart-span").textContent = data.end
    ? "last " + Math.round((data.requestsPerSecond.length * data.bucketSeconds) / 60) + " min, " + data.bucketSeconds + " s buckets, to " + clock(Date.parse(data.end))
    : "collecting: the first point comes within " + data.bucketSeconds + " s";
  if (!data.end) { charts.replaceChildren(); return; }
  const base = { bucketSeconds: data.bucketSeconds, end: data.end };
  charts.replaceChildren(
    lineChart({ ...base, key: "rps", title: "Requests", unit: "req/s", area: true, lines: [{ name: "req/s", cls: "s-rps", values: data.requestsPerSecond }] }),
    lineChart({ ...base, key: "errors", title: "5xx answers", unit: "5xx/s", area: true, lines: [{ name: "5xx/s", cls: "s-err", values: data.errorsPerSecond }] }),
    lineChart({ ...base, key: "latency", title: "Upstream latency", unit: "ms", lines: [{ name: "p50", cls: "s-p50", values: data.p50Ms }, { name: "p99", cls: "s-p99", values: data.p99Ms }] }),
  );
  panel.dataset.end = data.end;
}
function chartTitle() {
  const r = last && last.servers.flatMap((x) => x.routes).find((x) => x.upstream === chartRoute);
  document.getElementById("chart-route").textContent = r ? r.label + "  \\u2192 " + r.backend : chartRoute || "";
}
function fetchCharts() {
  clearTimeout(chartTimer);
  if (!chartRoute) return;
  const gen = chartGen;
  fetch("api/routes/" + encodeURIComponent(chartRoute) + "/series", { credentials: "same-origin" })
    .then((r) => r.ok ? r.json() : r.text().then((t) => Promise.reject(new Error(t.trim() || "HTTP " + r.status))))
    .then((data) => { if (gen === chartGen) { drawCharts(data); chartTimer = setTimeout(fetchCharts, data.bucketSeconds * 1000); } })
    .catch((e) => { if (gen !== chartGen) return; document.getElementById("chart-note").textContent = "charts: " + e.message; chartTimer = setTimeout(fetchCharts, 5000); });
}
function selectChart(upstream) {
  if (upstream !== null && !ROUTE_NAME.test(upstream)) return;
  chartRoute = upstream; chartGen++;
  const panel = document.getElementById("chart-panel");
  panel.hidden = !upstream;
  panel.dataset.upstream = upstream || "";
  document.getElementById("charts").replaceChildren();
  document.getElementById("chart-note").textContent = "";
  window.history.replaceState(null, "", upstream ? "#chart=" + upstream : location.pathname);
  for (const tr of document.querySelectorAll("tr[data-upstream]")) tr.classList.toggle("selected", tr.dataset.upstream === upstream);
  chartTitle();
  if (upstream) fetchCharts(); else clearTimeout(chartTimer);
}
// Called by render(): a route no longer in force closes its panel; the title follows a changed backend.
function chartsOnRender(s) {
  if (!chartRoute) return;
  if (!s.servers.some((x) => x.routes.some((r) => r.upstream === chartRoute))) return selectChart(null);
  chartTitle();
}
document.getElementById("servers").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-upstream]");
  if (tr) selectChart(tr.dataset.upstream === chartRoute ? null : tr.dataset.upstream);
});
document.getElementById("chart-close").addEventListener("click", () => selectChart(null));
if (location.hash.startsWith("#chart=")) selectChart(location.hash.slice(7));
`;

const SCRIPT = `
"use strict";
const $ = (tag, attrs, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v; else if (k === "text") el.textContent = v; else el.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) el.append(k);
  return el;
};
const history = new Map();
const MAX_ROWS = 300;
const MAX_PROBLEMS = 100;
let last = null;
let lastNow = null;
const fmtRate = (n) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const fmtPct = (r) => (r === null || r === undefined ? "\\u2013" : (r * 100).toFixed(r < 0.1 ? 2 : 1) + "%");
const ago = (iso, now) => {
  if (!iso) return "never";
  const s = Math.max(0, (Date.parse(now) - Date.parse(iso)) / 1000);
  return s < 60 ? s.toFixed(0) + "s ago" : s < 3600 ? (s / 60).toFixed(0) + "m ago" : (s / 3600).toFixed(1) + "h ago";
};
function pill(state, label, detail) {
  return $("span", { class: "pill " + state, title: detail || "" }, $("span", { class: "dot" }), label);
}
function spark(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 60 20");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...points);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p, i) => (i * 60) / Math.max(1, points.length - 1) + "," + (19 - (p / max) * 18)).join(" "));
  svg.append(line);
  return svg;
}
function endpoints(route) {
  if (!route.endpoints.length) return $("span", { class: "none", text: "no endpoint: answers 503" });
  const box = $("div");
  for (const e of route.endpoints) {
    const h = e.health;
    const why = h ? ", check " + h.state + (h.since ? " since " + h.since : "") + (h.reason ? ": " + h.reason : "") : "";
    const ep = $("span", { class: "ep " + e.role, "data-endpoint": e.address, "data-role": e.role, title: e.role + ", weight " + e.weight + why },
      $("i", { text: e.role }), e.address, $("span", { class: "w", text: "w" + e.weight }));
    if (h) ep.append($("b", { class: "hc " + h.state, "data-health": h.state, text: h.state === "down" ? "down by check" : "check " + h.state }));
    const et = e.traffic;
    if (et) ep.append($("span", { class: et.errorsPerSecond > 0 ? "err" : "w", "data-ep-rate": String(et.requestsPerSecond), "data-ep-errors": String(et.errorsPerSecond), text: fmtRate(et.requestsPerSecond) + " req/s" + (et.errorsPerSecond > 0 ? ", " + fmtRate(et.errorsPerSecond) + " err/s" : "") }));
    const ej = e.ejected;
    if (ej) ep.append($("b", { class: "hc down", "data-ejected": "1", title: "since " + ej.since + " until " + ej.until + ": " + ej.reason, text: "ejected by traffic" }));
    box.append(ep);
  }
  if (route.failOpen) box.append($("div", { class: "failopen", "data-fail-open": "1", text: route.failOpen }));
  return box;
}
// Where the routes come from: the file (valid or not), or the etcd prefix with the revision in force.
function routesPill(s) {
  const r = s.routes;
  if (!r || r.kind !== "etcd") {
    const fileOk = s.services.valid;
    return pill(fileOk ? (s.services.warnings.length ? "warn" : "ok") : "bad", "routing file " + (fileOk ? "valid" : "invalid"), s.services.file);
  }
  const state = !r.connected ? "bad" : r.rejected.length ? "warn" : "ok";
  const label = "routes etcd " + r.prefix + " @" + r.revision + (r.rejected.length ? ", " + r.rejected.length + " rejected" : "") + (r.connected ? "" : " (disconnected)");
  const el = pill(state, label, r.origin + ", " + r.keys + " keys");
  el.setAttribute("data-routes", "etcd");
  return el;
}
// Each rejected etcd key with its reasons, as entries of the problems list.
function rejectedKeys(s) {
  const r = s.routes;
  if (!r || r.kind !== "etcd") return [];
  return r.rejected.flatMap((k) => k.problems.map((p) => ["error", "etcd key " + (k.keptLastValid ? "(last valid version serves)" : "(server absent)"), p]));
}
function render(s) {
  last = s;
  const fresh = s.now !== lastNow;
  lastNow = s.now;
  const filter = document.getElementById("filter").value.trim().toLowerCase();
  const health = document.getElementById("health");
  health.replaceChildren(...[
    pill(s.ready.ready ? "ok" : "bad", s.ready.ready ? "ready" : "not ready", s.ready.why),
    pill(s.nginx.running ? "ok" : "bad", "nginx " + (s.nginx.running ? "pid " + s.nginx.pid : "down"), s.nginx.lastError || ("generation " + (s.nginx.generation || "none"))),
    routesPill(s),
    s.services.pending ? pill("warn", "routing change pending", s.services.pending.error) : null,
    s.waiting ? pill("warn", "waiting for the registry", s.waiting) : null,
    s.registry.valid === false
      ? pill("bad", "registry " + s.registry.kind + " invalid", s.registry.origin)
      : pill(s.registry.connected ? (s.registry.warnings.length ? "warn" : "ok") : (s.registry.kind === "none" ? "warn" : "bad"), "registry " + s.registry.kind + (s.registry.connected ? "" : " (disconnected)"), s.registry.origin),
    pill(s.lastSuccessAt ? "ok" : "warn", "last apply " + ago(s.lastSuccessAt, s.now)),
  ].filter(Boolean));
  document.getElementById("generation").textContent = s.nginx.generation ? "generation " + s.nginx.generation : "";
  let routes = 0, eps = 0, rps = 0, errs = 0, shown = 0, hidden = 0;
  const servers = document.getElementById("servers");
  const cards = [];
  for (const srv of s.servers) {
    const rows = [];
    for (const r of srv.routes) {
      routes++; eps += r.endpoints.length;
      const t = r.traffic;
      const rate = t ? t.requestsPerSecond : 0;
      rps += rate; errs += t && t.errorRate ? t.errorRate * rate : 0;
      const h = history.get(r.upstream) || [];
      if (fresh) { h.push(rate); while (h.length > 60) h.shift(); }
      history.set(r.upstream, h);
      if (filter && !(r.label + " " + r.backend + " " + r.endpoints.map((e) => e.address).join(" ")).toLowerCase().includes(filter)) continue;
      // A page with thousands of rows redrawn every second helps nobody: the filter finds the rest.
      if (shown >= MAX_ROWS) { hidden++; continue; }
      shown++;
      rows.push($("tr", { "data-route": r.label, "data-upstream": r.upstream, class: r.upstream === chartRoute ? "selected" : "", title: "show charts" },
        $("td", {}, $("div", { class: "mono", text: r.prefix }), $("div", { class: "dim mono", text: "\\u2192 " + r.backend + (r.backendPath !== "/" ? " " + r.backendPath : "") + (r.backup ? "  backup " + r.backup : "") })),
        $("td", {}, endpoints(r)),
        $("td", { class: "num", "data-rate": String(rate) }, fmtRate(rate) + " req/s"),
        $("td", { class: "num " + (t && t.errorRate > 0.05 ? "err" : t && t.errorRate > 0 ? "warnc" : ""), "data-errors": String(t ? t.errorRate : "") }, fmtPct(t ? t.errorRate : null)),
        $("td", { class: "num", text: t ? String(t.requests) : "0" }),
        $("td", {}, spark(h)),
      ));
    }
    if (!rows.length && (filter || hidden)) continue;
    cards.push($("section", { class: "card", "data-server": srv.domain + ":" + srv.port },
      $("h2", {}, srv.domain, $("span", { class: "sub", text: ":" + srv.port + (srv.tlsPort ? "  \\u00b7  TLS :" + srv.tlsPort : "") + "  \\u00b7  " + srv.routes.length + " route" + (srv.routes.length === 1 ? "" : "s") })),
      $("table", {}, $("thead", {}, $("tr", {}, ...["Route", "Endpoints", "Rate", "5xx", "Requests", "Last minute"].map((h) => $("th", { text: h })))), $("tbody", {}, ...rows))));
  }
  const current = new Set(s.servers.flatMap((x) => x.routes.map((r) => r.upstream)));
  for (const k of history.keys()) if (!current.has(k)) history.delete(k);
  if (hidden) cards.push($("div", { class: "card empty", text: hidden + " more routes not shown: type in the filter to find them" }));
  chartsOnRender(s);
  servers.replaceChildren(...(cards.length ? cards : [$("div", { class: "card empty", text: s.servers.length ? "no route matches the filter" : "no routes applied yet" })]));
  const tiles = [["servers", s.servers.length], ["routes", routes], ["endpoints", eps], ["requests/s", fmtRate(rps)], ["5xx", fmtPct(rps > 0 ? errs / rps : null)], ["reloads", s.counters.reloads]];
  document.getElementById("tiles").replaceChildren(...tiles.map(([k, v]) => $("div", { class: "tile" }, $("b", { text: String(v) }), $("small", { text: k }))));
  const problems = [...s.services.errors.map((p) => ["error", "routing file", p]), ...rejectedKeys(s), ...(s.registry.errors || []).map((p) => ["error", "registry", p]), ...s.services.warnings.map((p) => ["warning", "routing file", p]), ...s.registry.warnings.map((p) => ["warning", "registry", p])];
  if (s.services.pending) problems.unshift(["error", "routing change pending", { path: "since " + s.services.pending.since + ", next try " + s.services.pending.nextRetryAt, message: s.services.pending.error }]);
  if (s.nginx.lastError && !s.ready.ready) problems.unshift(["error", "nginx", { path: "", message: s.nginx.lastError }]);
  // One per bad registry key can mean thousands: the first ones, and how many more /api/status lists.
  const listed = problems.slice(0, MAX_PROBLEMS).map(([kind, where, p]) => $("div", { class: "problem", "data-problem": kind, "data-source": where },
    $("div", {}, $("span", { class: kind === "error" ? "err" : "warnc", text: kind }), " ", $("span", { class: "dim", text: where }), " ", $("span", { class: "path", text: p.path || "" })),
    $("div", { text: p.message })));
  if (problems.length > MAX_PROBLEMS) listed.push($("div", { class: "problem dim", text: (problems.length - MAX_PROBLEMS) + " more: /api/status lists them all" }));
  document.getElementById("problems").replaceChildren(...(listed.length ? listed : [$("div", { class: "empty okc", text: "no errors or warnings" })]));
  document.getElementById("problem-count").textContent = problems.length ? String(problems.length) : "";
  document.getElementById("applies").replaceChildren(...(s.applies.length ? s.applies.slice(0, 20).map((a) => {
    const c = a.change;
    const n = c ? (c.counts || { upstreamsAdded: c.upstreamsAdded.length, upstreamsRemoved: c.upstreamsRemoved.length, endpointsAdded: c.endpointsAdded.length, endpointsRemoved: c.endpointsRemoved.length }) : null;
    const what = n ? [n.upstreamsAdded && "+" + n.upstreamsAdded + " upstream", n.upstreamsRemoved && "\\u2212" + n.upstreamsRemoved + " upstream", n.endpointsAdded && "+" + n.endpointsAdded + " endpoint", n.endpointsRemoved && "\\u2212" + n.endpointsRemoved + " endpoint"].filter(Boolean).join(", ") : "";
    return $("tr", { "data-apply": a.result },
      $("td", { class: "mono dim", title: a.at, text: new Date(a.at).toLocaleTimeString([], { hour12: false }) }),
      $("td", {}, $("span", { class: "badge " + a.result, text: a.result }), " ", $("span", { class: "dim", text: a.action })),
      $("td", { class: "num", text: a.ms.total + " ms" }),
      $("td", {}, $("div", { text: what || a.reason }), a.error ? $("div", { class: "err mono", text: a.error.slice(0, 300) }) : null, what ? $("div", { class: "dim", text: a.reason }) : null));
  }) : [$("tr", {}, $("td", { class: "dim", text: "no applies yet" }))]));
}
function live(state, text) {
  const c = document.getElementById("conn");
  c.textContent = text; c.className = "conn " + state;
}
let poll = null;
function startPolling() {
  if (poll) return;
  live("warn", "polling");
  const once = () => fetch("api/status", { credentials: "same-origin" }).then((r) => r.ok ? r.json() : Promise.reject(r.status)).then((s) => { render(s); live("ok", "polling"); }).catch(() => live("bad", "controller unreachable"));
  poll = setInterval(once, 2000);
  once();
}
if ("EventSource" in window) {
  const es = new EventSource("api/events");
  es.addEventListener("status", (e) => { render(JSON.parse(e.data)); live("ok", "\\u25cf live"); });
  // A refused stream (503: every slot taken) is not retried by the browser: poll instead.
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) { es.close(); startPolling(); } else live("bad", "reconnecting\\u2026"); };
} else startPolling();
document.getElementById("filter").addEventListener("input", () => last && render(last));
`;

/** The dashboard page served at `/`. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>nginx-lb</title><style>${STYLE}${CHART_STYLE}</style></head>
<body>
<header><h1>nginx<span>-lb</span></h1><div id="health"></div><span class="spacer"></span>
<span class="dim mono" id="generation"></span><input type="search" id="filter" placeholder="filter routes, backends, endpoints" aria-label="filter">
<span class="conn" id="conn">connecting\u2026</span></header>
<main><div><div class="tiles" id="tiles"></div>
<section class="card" id="chart-panel" hidden><h2><span id="chart-route" class="mono"></span><span class="sub" id="chart-span"></span>
<button type="button" id="chart-close" aria-label="close the charts">\u00d7</button></h2><div class="charts" id="charts"></div><div class="chart-note" id="chart-note"></div></section>
<div id="servers"><div class="card empty">loading\u2026</div></div></div>
<aside><section class="card"><h2>Errors and warnings <span class="sub" id="problem-count"></span></h2><div id="problems"></div></section>
<section class="card"><h2>Recent applies</h2><table><tbody id="applies"></tbody></table></section></aside></main>
<script>${SCRIPT}${CHART_SCRIPT}</script></body></html>
`;

/** Shown to a browser without the token: stores it in a same-site cookie for this admin server and reloads. */
export const LOGIN_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nginx-lb: sign in</title><style>${STYLE}
form{max-width:420px;margin:12vh auto;padding:24px}input[type=password]{width:100%;margin:12px 0;background:var(--panel2);border:1px solid var(--line);color:var(--text);border-radius:6px;padding:8px}
button{background:var(--accent);border:0;border-radius:6px;padding:8px 16px;color:#0f1419;font-weight:600}</style></head>
<body><form class="card" id="f"><h1>nginx<span>-lb</span> admin</h1><p class="dim">This admin server needs its bearer token.</p>
<input type="password" id="t" autocomplete="current-password" placeholder="admin token" aria-label="admin token"><button>Sign in</button></form>
<script>document.getElementById("f").addEventListener("submit",(e)=>{e.preventDefault();
document.cookie="nlb_admin_token="+encodeURIComponent(document.getElementById("t").value)+"; path=/; SameSite=Strict";location.reload();});</script>
</body></html>
`;
