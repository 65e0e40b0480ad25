import { formatProblem, type Problem } from "../model/problem.js";
import { UNREADABLE_CODES } from "../sources/read-json.js";

/** Exit codes of the file commands: invalid content is 1; a file argument that names nothing readable is 2 (usage). */
export const EXIT_INVALID = 1;
export const EXIT_USAGE = 2;

/** True when the problems say the file could not be read at all (missing, a directory, unreadable). */
export function unreadable(errors: readonly Problem[]): boolean {
  return errors.length > 0 && errors.every((e) => UNREADABLE_CODES.has(e.code));
}

/** The exit code for a file that failed to load. */
export function exitCodeFor(errors: readonly Problem[]): number {
  return unreadable(errors) ? EXIT_USAGE : EXIT_INVALID;
}

/** One problem as the CLI shows it: `FILE: PATH: message`, or `FILE: message` for the file as a whole. */
function line(file: string, p: Problem): string {
  return p.path === "(file)" ? `${file}: ${p.message}` : `${file}: ${formatProblem(p)}`;
}

/**
 * Prints problems as the CLI shows them: one line each on stderr, prefixed by severity and the file, then a count
 * with `outcome` (none when null, or for a file that could not be read: its one line says it all).
 */
export function printProblems(
  file: string,
  errors: readonly Problem[],
  warnings: readonly Problem[],
  outcome: string | null = "nothing was rendered",
): void {
  for (const w of warnings) console.error(`warning: ${line(file, w)}`);
  for (const e of errors) console.error(`error: ${line(file, e)}`);
  if (errors.length > 0 && outcome !== null && !unreadable(errors))
    console.error(`${file}: ${errors.length} error${errors.length === 1 ? "" : "s"}; ${outcome}`);
}
