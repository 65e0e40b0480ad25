import { Gauge, type Registry } from "prom-client";
import type { StatusStore } from "../reconciler/status.js";

/**
 * Where the routes in force come from: the file or the etcd prefix (as a label), the etcd revision of the table,
 * whether etcd is followed, and how many keys are rejected. Read from the status at scrape time.
 */
export function createRoutesMetrics(status: StatusStore, registers: Registry[]): void {
  const routes = () => status.get().routes;
  new Gauge({
    name: "nginx_lb_routes_source_info",
    help: "Where the routing table comes from: kind file (source: its path) or etcd (source: the key prefix)",
    labelNames: ["kind", "source"],
    registers,
    collect() {
      this.reset();
      const r = routes();
      if (r) this.set({ kind: r.kind, source: r.kind === "file" ? r.file : r.prefix }, 1);
    },
  });
  new Gauge({
    name: "nginx_lb_routes_revision",
    help: "Routes from etcd: the etcd revision the routing table reflects (0 before etcd first answered; NaN with a file)",
    registers,
    collect() {
      const r = routes();
      this.set(r?.kind === "etcd" ? r.revision : NaN);
    },
  });
  new Gauge({
    name: "nginx_lb_routes_connected",
    help: "Routes from etcd: 1 while the table follows etcd's watch, 0 while etcd is unreachable (the last known table serves); 1 with a file",
    registers,
    collect() {
      const r = routes();
      this.set(r?.kind === "etcd" && !r.connected ? 0 : 1);
    },
  });
  new Gauge({
    name: "nginx_lb_routes_rejected_keys",
    help: "Routes from etcd: keys refused (invalid, or conflicting with an older key); /api/status lists them with the reasons",
    registers,
    collect() {
      const r = routes();
      this.set(r?.kind === "etcd" ? r.rejected.length : 0);
    },
  });
}
