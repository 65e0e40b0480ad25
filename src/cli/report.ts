import { formatProblem, type Problem } from "../model/problem.js";

/** One problem as the CLI shows it: `FILE: PATH: message`, or `FILE: message` for the file as a whole. */
function line(file: string, p: Problem): string {
  return p.path === "(file)" ? `${file}: ${p.message}` : `${file}: ${formatProblem(p)}`;
}

/** Prints problems as the CLI shows them: one line each on stderr, prefixed by severity and the file. */
export function printProblems(file: string, errors: readonly Problem[], warnings: readonly Problem[]): void {
  for (const w of warnings) console.error(`warning: ${line(file, w)}`);
  for (const e of errors) console.error(`error: ${line(file, e)}`);
  if (errors.length > 0)
    console.error(`${file}: ${errors.length} error${errors.length === 1 ? "" : "s"}; nothing was rendered`);
}
