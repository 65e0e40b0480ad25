import { readFile } from "node:fs/promises";
import type { Services } from "../model/services.js";

const PORT_FIELD = /"(?:frontend_port|ssl_port)"\s*:\s*(\d{1,5})\b/g;

/**
 * The ports a services file names, found without validating it: read before the control port is chosen, so that the
 * choice avoids them even when the file is invalid now and fixed later. A port it misses (a file that cannot be read)
 * is caught when the file is checked (reservedPortProblems); this only keeps a fresh choice off the routing table.
 */
export async function declaredPorts(file: string | undefined, saved: Services | undefined): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const s of saved?.servers ?? []) {
    ports.add(s.port);
    if (s.tls) ports.add(s.tls.port);
  }
  if (file === undefined) return ports;
  const text = await readFile(file, "utf8").catch(() => "");
  for (const m of text.matchAll(PORT_FIELD)) ports.add(Number(m[1]));
  return ports;
}
