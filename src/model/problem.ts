/** A validation finding: where (a JSON path such as `servers[0].routes["/api"].port`) and what to do. */
export interface Problem {
  readonly code: string;
  readonly path: string;
  readonly message: string;
}

/** A result that carries every problem found instead of throwing at the first. */
export type Checked<T> =
  | { readonly ok: true; readonly value: T; readonly warnings: readonly Problem[] }
  | { readonly ok: false; readonly errors: readonly Problem[]; readonly warnings: readonly Problem[] };

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Formats a zod-style path as the JSON path users read: `servers[0].routes["/api"].port`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else if (typeof part === "string" && IDENT.test(part)) out += out === "" ? part : `.${part}`;
    else out += `[${JSON.stringify(String(part))}]`;
  }
  return out === "" ? "(file)" : out;
}

/** Shows a received value briefly and safely inside a message. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One line per problem, as the CLI and logs print them. */
export function formatProblem(p: Problem): string {
  return `${p.path}: ${p.message}`;
}

/** The same result with `warnings` reported before its own (e.g. the file reader's before the validator's). */
export function withWarnings<T>(checked: Checked<T>, warnings: readonly Problem[]): Checked<T> {
  return warnings.length === 0 ? checked : { ...checked, warnings: [...warnings, ...checked.warnings] };
}
