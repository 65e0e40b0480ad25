import { formatProblem, type Problem } from "../model/problem.js";

/** Prints problems as the CLI shows them: one line each on stderr, prefixed by severity and the file. */
export function printProblems(file: string, errors: readonly Problem[], warnings: readonly Problem[]): void {
  for (const w of warnings) console.error(`warning: ${file}: ${formatProblem(w)}`);
  for (const e of errors) console.error(`error: ${file}: ${formatProblem(e)}`);
  if (errors.length > 0)
    console.error(`${file}: ${errors.length} error${errors.length === 1 ? "" : "s"}; nothing was rendered`);
}
