import type { Services } from "../model/services.js";
import { type Checked, withWarnings } from "../model/problem.js";
import { nodeTlsInspector } from "../tls/inspect.js";
import { readJsonFile, readTextFile } from "./read-json.js";
import { parseServicesText } from "./services-text.js";
import { parseBackendsFile, type BackendSet } from "../model/backends.js";

/** Loads and validates services.json, certificates checked with node:crypto. */
export async function loadServicesFile(file: string): Promise<Checked<Services>> {
  const text = await readTextFile(file);
  return text.ok ? parseServicesText(text.value, { inspectTls: nodeTlsInspector }) : text;
}

/** Loads and validates the embedded registry file. */
export async function loadBackendsFile(file: string): Promise<Checked<BackendSet>> {
  const json = await readJsonFile(file);
  if (!json.ok) return json;
  return withWarnings(parseBackendsFile(json.value), json.warnings);
}
