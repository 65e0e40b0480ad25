import { readFile } from "node:fs/promises";
import { type Checked, type Problem, formatPath } from "../model/problem.js";
import { scanJson } from "./json-scan.js";

/** Problem codes of a file that could not be read at all (as opposed to one whose content is wrong). */
export const UNREADABLE_CODES: ReadonlySet<string> = new Set(["file_missing", "file_unreadable", "not_a_file"]);

function unreadable(err: NodeJS.ErrnoException): Problem {
  const path = "(file)";
  if (err.code === "ENOENT") return { code: "file_missing", path, message: "does not exist: check the path" };
  if (err.code === "EISDIR")
    return { code: "not_a_file", path, message: "is a directory: give the JSON file itself, not its directory" };
  if (err.code === "EACCES")
    return { code: "file_unreadable", path, message: "is not readable by this user: check its mode and owner" };
  return { code: "file_unreadable", path, message: `cannot be read (${err.code ?? err.message})` };
}

/** Repeated keys reported one by one; past this a file (generated, most likely) gets one summary warning. */
const MAX_DUPLICATE_WARNINGS = 20;

/** Parses JSON text: a leading byte-order mark is dropped; a syntax error gives line and column. */
export function parseJsonText(text: string): Checked<unknown> {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let value: unknown;
  try {
    value = JSON.parse(body) as unknown;
  } catch (e) {
    const where = scanJson(body).error;
    // The scanner accepts what JSON.parse accepts; should they ever disagree, JSON.parse's own words still explain.
    const message = where
      ? `is not valid JSON: line ${where.line} column ${where.column}: ${where.message}`
      : `is not valid JSON: ${(e as Error).message}`;
    return { ok: false, errors: [{ code: "invalid_json", path: "(file)", message }], warnings: [] };
  }
  const { duplicates } = scanJson(body);
  const warnings: Problem[] = duplicates.slice(0, MAX_DUPLICATE_WARNINGS).map((d) => ({
    code: "duplicate_key",
    path: formatPath(d.path),
    message: `appears twice in one object (line ${d.first.line} column ${d.first.column}, again line ${d.again.line} column ${d.again.column}); only the last one counts: remove the other`,
  }));
  if (duplicates.length > MAX_DUPLICATE_WARNINGS)
    warnings.push({
      code: "duplicate_key",
      path: "(file)",
      message: `has ${duplicates.length - MAX_DUPLICATE_WARNINGS} more repeated keys`,
    });
  return { ok: true, value, warnings };
}

/**
 * Reads a text file; a missing or unreadable file becomes a problem saying what to fix. Decoded in one piece: node's
 * readFile with an encoding decodes chunk by chunk into a string of joined parts, which the first comparison or match
 * over it then copies again (services.json is compared with the previous read before anything else).
 */
export async function readTextFile(file: string): Promise<Checked<string>> {
  const bytes = await readBytesFile(file);
  return bytes.ok ? { ok: true, value: bytes.value.toString("utf8"), warnings: [] } : bytes;
}

/** Reads a file's bytes; a missing or unreadable file becomes a problem saying what to fix (as readTextFile). */
export async function readBytesFile(file: string): Promise<Checked<Buffer>> {
  try {
    return { ok: true, value: await readFile(file), warnings: [] };
  } catch (e) {
    return { ok: false, errors: [unreadable(e as NodeJS.ErrnoException)], warnings: [] };
  }
}

/** Reads a JSON file; a missing file or a syntax error becomes a problem saying what to fix. */
export async function readJsonFile(file: string): Promise<Checked<unknown>> {
  const text = await readTextFile(file);
  return text.ok ? parseJsonText(text.value) : text;
}
