import { readFile } from "node:fs/promises";
import type { Checked, Problem } from "../model/problem.js";

/** Reads a JSON file; a missing file or a syntax error becomes a problem naming the file and what to fix. */
export async function readJsonFile(file: string): Promise<Checked<unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOENT" ? "does not exist" : err.code === "EACCES" ? "is not readable" : err.message;
    return { ok: false, errors: [{ code: "file_unreadable", path: file, message: `${why}` }], warnings: [] };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown, warnings: [] };
  } catch (e) {
    const problem: Problem = {
      code: "invalid_json",
      path: file,
      message: `is not valid JSON: ${(e as Error).message}`,
    };
    return { ok: false, errors: [problem], warnings: [] };
  }
}
