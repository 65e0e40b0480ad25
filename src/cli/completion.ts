import type { Argument, Command, Option } from "commander";

/**
 * `nginx-lb completion bash`: a bash completion script generated from commander's command tree, so every command,
 * flag and choice the CLI accepts is offered and nothing it dropped lingers.
 */

/** What a value completes to: file or directory names, a fixed list of words, or nothing (free text). */
export type ValueKind = "file" | "dir" | "none" | { readonly words: readonly string[] };

export interface CommandSpec {
  readonly name: string;
  /** Every flag spelling (`--services`, `-h`), for a bare flag completion. */
  readonly flags: readonly string[];
  /** Flags that take a value, with what that value completes to. */
  readonly values: readonly { readonly flags: readonly string[]; readonly kind: ValueKind }[];
  /** What the first positional argument completes to; "none" when the command takes none. */
  readonly argument: ValueKind;
}

export interface CompletionSpec {
  readonly program: string;
  readonly flags: readonly string[];
  readonly commands: readonly CommandSpec[];
}

/** The kind of a value from its placeholder name (`<file>`, `<dir>`, `<command>`) and choices. */
function kindOf(name: string, choices: readonly string[] | undefined, commands: readonly string[]): ValueKind {
  if (choices && choices.length > 0) return { words: choices };
  if (name === "command") return { words: commands };
  if (/dir$/i.test(name)) return "dir";
  if (/(file|path)$/i.test(name)) return "file";
  return "none";
}

const spellings = (o: Option): string[] => [o.long, o.short].filter((f): f is string => f !== undefined);
const placeholder = (o: Option): string => /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1] ?? "";

/** The completion spec of a commander program: its visible commands, flags, value placeholders and choices. */
export function completionSpec(program: Command): CompletionSpec {
  const help = program.createHelp();
  const commands = help.visibleCommands(program);
  const names = commands.map((c) => c.name());
  return {
    program: program.name(),
    flags: help.visibleOptions(program).flatMap(spellings),
    commands: commands.map((c) => {
      const options = c.createHelp().visibleOptions(c);
      const first: Argument | undefined = c.registeredArguments[0];
      return {
        name: c.name(),
        flags: options.flatMap(spellings),
        values: options
          .filter((o) => o.required)
          .map((o) => ({ flags: spellings(o), kind: kindOf(placeholder(o), o.argChoices, names) })),
        argument: first ? kindOf(first.name(), first.argChoices, names) : "none",
      };
    }),
  };
}

// Only words of this shape reach the script: they need no quoting, and a word bash would split cannot be completed
// as one word anyway.
const WORD = /^[A-Za-z0-9_.:/@+-]+$/;
const words = (list: readonly string[]) => list.filter((w) => WORD.test(w)).join(" ");
const kindArg = (k: ValueKind) => (typeof k === "string" ? k : `'words:${words(k.words)}'`);
const shellName = (program: string) => `_${program.replace(/[^A-Za-z0-9_]/g, "_")}`;

/** The bash script for a spec: `source <(nginx-lb completion bash)` registers it. */
export function bashCompletion(spec: CompletionSpec): string {
  const fn = shellName(spec.program);
  const commandCase = (c: CommandSpec) => {
    const valueCases = c.values
      .filter((v) => v.flags.every((f) => WORD.test(f)) && v.flags.length > 0)
      .map((v) => `        ${v.flags.join("|")}) ${fn}_reply ${kindArg(v.kind)} "$cur"; return ;;`);
    return [
      `    ${c.name})`,
      ...(valueCases.length > 0 ? ["      case $prev in", ...valueCases, "      esac"] : []),
      c.argument === "none"
        ? `      ${fn}_reply 'words:${words(c.flags)}' "$cur" ;;`
        : `      if [[ $cur == -* ]]; then ${fn}_reply 'words:${words(c.flags)}' "$cur"; else ${fn}_reply ${kindArg(c.argument)} "$cur"; fi ;;`,
    ].join("\n");
  };
  return `# bash completion for ${spec.program}, generated from its commands and flags by \`${spec.program} completion bash\`.
# In this shell: source <(${spec.program} completion bash)
# In every new shell: ${spec.program} completion bash > /etc/bash_completion.d/${spec.program}

# $1: file, dir, none, or words:<space-separated words>; $2: the word being completed.
${fn}_reply() {
  case $1 in
    file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$2") ;;
    dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$2") ;;
    words:*) mapfile -t COMPREPLY < <(compgen -W "\${1#words:}" -- "$2") ;;
    *) COMPREPLY=() ;;
  esac
}

${fn}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} cmd= i
  COMPREPLY=()
  # --flag=value: bash splits at "=", so the flag is one word further back.
  if [[ $cur == = ]]; then cur=; fi
  if [[ $prev == = && COMP_CWORD -ge 2 ]]; then prev=\${COMP_WORDS[COMP_CWORD-2]}; fi
  # The command is the first word that is not a flag (the program's own flags take no value).
  for ((i = 1; i < COMP_CWORD; i++)); do
    if [[ \${COMP_WORDS[i]} != -* ]]; then cmd=\${COMP_WORDS[i]}; break; fi
  done
  case $cmd in
    '')
      if [[ $cur == -* ]]; then ${fn}_reply 'words:${words(spec.flags)}' "$cur"; else ${fn}_reply 'words:${words(spec.commands.map((c) => c.name))}' "$cur"; fi ;;
${spec.commands
  .filter((c) => WORD.test(c.name))
  .map(commandCase)
  .join("\n")}
  esac
}

complete -F ${fn} ${spec.program}
`;
}

/** `nginx-lb completion <shell>`: prints the script on stdout. */
export function completionCommand(program: Command, shell: string): number {
  if (shell !== "bash") {
    console.error(`nginx-lb completion: no completion for shell "${shell}"; supported: bash`);
    return 2;
  }
  process.stdout.write(bashCompletion(completionSpec(program)));
  return 0;
}
