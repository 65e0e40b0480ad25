import { readFile } from "node:fs/promises";
import type { Services } from "../model/services.js";

// A port field, also inside a JSON string (the saved etcd table holds each server as JSON text: `\"frontend_port\":80`).
const PORT_FIELD = /\\?"(?:frontend_port|ssl_port)\\?"\s*:\s*(\d{1,5})\b/g;

/**
 * The ports a routing table names, found without validating it: in services.json (or the state dir's copy of the
 * table in etcd) and in the last applied routes. Read before the control port is chosen, so that the choice avoids
 * them even when the file is invalid now and fixed later. A port it misses (a file that cannot be read, a table in
 * etcd changed since) is caught when the table is checked (reservedPortProblems); this only keeps the control port off
 * the routing table.
 */
export async function declaredPorts(file: string, saved: Services | undefined): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const s of saved?.servers ?? []) {
    ports.add(s.port);
    if (s.tls) ports.add(s.tls.port);
  }
  const text = await readFile(file, "utf8").catch(() => "");
  for (const m of text.matchAll(PORT_FIELD)) ports.add(Number(m[1]));
  return ports;
}
