import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ApplyRecord, StatusStore } from "../reconciler/status.js";
import { createRoutesMetrics } from "./routes-metrics.js";

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The controller's Prometheus metrics, read from the status store: gauges are computed at scrape time, apply
 * counters and duration histograms follow each new apply record.
 */
export function createControllerMetrics(status: StatusStore, metrics: Registry = new Registry()): Registry {
  const registers = [metrics];
  const applies = new Counter({
    name: "nginx_lb_applies_total",
    help: "Applies by result (applied, unchanged, failed) and action (reload, start, push, none)",
    labelNames: ["result", "action"],
    registers,
  });
  const histogram = (name: string, help: string) => new Histogram({ name, help, buckets: DURATION_BUCKETS, registers });
  const render = histogram("nginx_lb_render_duration_seconds", "Time to render nginx.conf");
  const test = histogram("nginx_lb_nginx_test_duration_seconds", "Time nginx -t took on a candidate config");
  const reload = histogram("nginx_lb_nginx_reload_duration_seconds", "Time from reload signal to confirmed generation");

  const seen = new WeakSet<ApplyRecord>();
  const observe = (rec: ApplyRecord) => {
    if (seen.has(rec)) return;
    seen.add(rec);
    applies.inc({ result: rec.result, action: rec.action });
    render.observe(rec.ms.render / 1000);
    if (rec.result !== "unchanged" && rec.ms.test > 0) test.observe(rec.ms.test / 1000);
    if (rec.result === "applied" && rec.action === "reload") reload.observe(rec.ms.reload / 1000);
  };
  // Oldest first, including the applies made before the admin server started.
  const catchUp = () => [...status.get().applies].reverse().forEach(observe);
  catchUp();
  status.subscribe(catchUp);

  new Gauge({
    name: "nginx_lb_config_generation_info",
    help: "The config generation nginx serves (hash of the rendered config), as a label",
    labelNames: ["generation"],
    registers,
    collect() {
      this.reset();
      const g = status.get().nginx.generation;
      if (g) this.set({ generation: g }, 1);
    },
  });
  new Gauge({
    name: "nginx_lb_upstream_endpoints",
    help: "Endpoints per upstream (one upstream per route) by role: primary, backup, down (weight 0)",
    labelNames: ["upstream", "route", "role"],
    registers,
    collect() {
      this.reset();
      for (const server of status.get().topology?.servers ?? [])
        for (const r of server.routes) {
          // Read once: a route's endpoints are made on each read (topology.ts).
          const endpoints = r.endpoints;
          for (const role of ["primary", "backup", "down"] as const)
            this.set({ upstream: r.upstream, route: r.label, role }, endpoints.filter((e) => e.role === role).length);
        }
    },
  });
  new Gauge({
    name: "nginx_lb_endpoint_up",
    help: "Per route and endpoint: 0 when the endpoint is down by its health check, 1 otherwise (up, not judged yet, or not checked)",
    labelNames: ["route", "endpoint"],
    registers,
    collect() {
      this.reset();
      for (const server of status.get().topology?.servers ?? [])
        for (const r of server.routes)
          for (const e of r.endpoints)
            this.set({ route: r.label, endpoint: e.address }, e.health?.state === "down" ? 0 : 1);
    },
  });
  new Gauge({
    name: "nginx_lb_endpoint_ejected",
    help: "Per route and endpoint (dynamic mode): 1 while nginx's balancer has ejected the endpoint for failing requests in a row (outlier ejection), 0 otherwise",
    labelNames: ["route", "endpoint"],
    registers,
    collect() {
      this.reset();
      const s = status.get();
      for (const server of s.topology?.servers ?? [])
        for (const r of server.routes) {
          const ejected = s.ejections?.[r.upstream];
          for (const e of r.endpoints) this.set({ route: r.label, endpoint: e.address }, ejected?.[e.address] ? 1 : 0);
        }
    },
  });
  new Gauge({
    name: "nginx_lb_route_fail_open",
    help: "1 when every endpoint of the route is down by health check and all are tried anyway (fail open)",
    labelNames: ["route"],
    registers,
    collect() {
      this.reset();
      for (const server of status.get().topology?.servers ?? [])
        for (const r of server.routes) if (r.failOpen) this.set({ route: r.label }, 1);
    },
  });
  const flag = (name: string, help: string, read: () => boolean) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read() ? 1 : 0);
      },
    });
  flag(
    "nginx_lb_services_valid",
    "1 when services.json is valid, 0 when the last valid routes stay in force",
    () => status.get().services.valid,
  );
  flag(
    "nginx_lb_services_pending",
    "1 while a valid routing change nginx refused (e.g. a held port) is pending and retried; the routes in force serve",
    () => status.get().services.pending !== undefined,
  );
  flag(
    "nginx_lb_registry_connected",
    "1 when the endpoint registry is connected",
    () => status.get().registry.connected,
  );
  flag(
    "nginx_lb_registry_valid",
    "1 unless the registry's content is rejected as a whole (an invalid backends file); 0: the endpoints in force stay",
    () => status.get().registry.valid,
  );
  flag("nginx_lb_nginx_running", "1 when the nginx master runs", () => status.get().nginx.running);
  new Gauge({
    name: "nginx_lb_config_warnings",
    help: "Warnings about the routing file (services) and the registry content (registry); /api/status lists them",
    labelNames: ["source"],
    registers,
    collect() {
      const s = status.get();
      this.set({ source: "services" }, s.services.warnings.length);
      this.set({ source: "registry" }, s.registry.warnings.length);
    },
  });
  new Gauge({
    name: "nginx_lb_endpoints_pushed_version",
    help: "Dynamic endpoints mode: the version of the endpoint sets nginx holds (NaN in reload mode or before a push)",
    labelNames: ["mode"],
    registers,
    collect() {
      const { endpointsMode, pushedVersion } = status.get().nginx;
      this.reset();
      this.set({ mode: endpointsMode ?? "reload" }, pushedVersion ?? NaN);
    },
  });
  new Gauge({
    name: "nginx_lb_seconds_since_last_successful_apply",
    help: "Seconds since the last successful apply (NaN before the first)",
    registers,
    collect() {
      const at = status.get().lastSuccessAt;
      this.set(at ? (Date.now() - Date.parse(at)) / 1000 : NaN);
    },
  });
  createRoutesMetrics(status, registers);
  return metrics;
}
