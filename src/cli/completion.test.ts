/**
 * `nginx-lb version` and `nginx-lb completion bash` through the real CLI: the script bash loads registers the
 * completion, and completing words as bash does (COMP_WORDS/COMP_CWORD) offers every command and flag `--help` lists.
 */
import { execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, test } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let bin = "";

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

const run = (cmd: string, args: string[], env: Record<string, string> = {}): Promise<Ran> =>
  new Promise((resolve) =>
    execFile(cmd, args, { cwd: ROOT, timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
const cli = (...args: string[]) => run(join(bin, "nginx-lb"), args);
/** PATH with this test's `nginx-lb` first. */
const withBin = () => ({ PATH: `${bin}:${process.env["PATH"] ?? "/usr/bin:/bin"}` });

/** What bash offers when the words typed so far are `words` (the last one being completed). */
async function complete(...words: string[]): Promise<string[]> {
  const script = [
    "source <(nginx-lb completion bash)",
    'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}',
    '_nginx_lb; printf "%s\\n" "${COMPREPLY[@]}"',
  ].join("\n");
  const r = await run("bash", ["-c", script, "bash", ...words], withBin());
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split("\n").filter((l) => l !== "");
}

/** The long flags a `--help` text lists under Options. */
const helpFlags = (help: string) => [...(help.split("Options:")[1] ?? "").matchAll(/^ {2}(?:-\w, )?(--[\w-]+)/gm)];

beforeAll(async () => {
  // nginx-lb on PATH, as an installed one would be: the CLI run from source.
  bin = await mkdtemp(join(tmpdir(), "nginx-lb-completion-"));
  const tsx = fileURLToPath(import.meta.resolve("tsx"));
  await writeFile(
    join(bin, "nginx-lb"),
    `#!/bin/sh\nexec "${process.execPath}" --import "${tsx}" "${join(ROOT, "src/cli/main.ts")}" "$@"\n`,
  );
  await chmod(join(bin, "nginx-lb"), 0o755);
});

describe("nginx-lb version", () => {
  test("prints package.json's version, as --version does", async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
    const [a, b] = await Promise.all([cli("version"), cli("--version")]);
    expect(a).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
    expect(b).toEqual(a);
  });
});

describe("nginx-lb completion bash", () => {
  test("sourcing it registers the completion function", async () => {
    const r = await run("bash", ["-c", "source <(nginx-lb completion bash); complete -p nginx-lb"], withBin());
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("complete -F _nginx_lb nginx-lb");
  });

  test("an unknown shell is a usage error naming the choices", async () => {
    const r = await cli("completion", "fish");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Allowed choices are bash");
  });

  test("offers every command and, for each, every flag its --help lists", async () => {
    const help = (await cli("--help")).stdout;
    const commands = [...(help.split("Commands:")[1] ?? "").matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1] ?? "");
    expect(commands).toEqual(expect.arrayContaining(["run", "validate", "version", "completion"]));
    expect((await complete("nginx-lb", "")).sort()).toEqual([...commands].sort());
    expect(await complete("nginx-lb", "-")).toEqual(expect.arrayContaining(["--version", "--help"]));
    for (const c of commands.filter((c) => c !== "help")) {
      const flags = helpFlags((await cli(c, "--help")).stdout).map((m) => m[1]);
      expect(flags, c).toContain("--help");
      expect(await complete("nginx-lb", c, "--"), c).toEqual(expect.arrayContaining(flags));
    }
    expect(await complete("nginx-lb", "help", "re")).toEqual(["render", "register"]);
    // Two CLI starts per command (each a tsx process of about a second, several on a loaded machine).
  }, 240_000);

  test("completes values: choices, files, directories, and nothing for free text", async () => {
    expect(await complete("nginx-lb", "run", "--endpoints-mode", "")).toEqual(["dynamic", "reload", "auto"]);
    expect(await complete("nginx-lb", "run", "--endpoints-mode", "=", "d")).toEqual(["dynamic"]);
    expect(await complete("nginx-lb", "run", "--etcd-api", "")).toEqual(["v3", "v2"]);
    expect(await complete("nginx-lb", "completion", "")).toEqual(["bash"]);
    expect(await complete("nginx-lb", "validate", "examples/ser")).toEqual(["examples/services.json"]);
    expect(await complete("nginx-lb", "run", "--services", "examples/ba")).toEqual(["examples/backends.json"]);
    expect(await complete("nginx-lb", "run", "--state-dir", "examples/")).toEqual(["examples/tls"]);
    expect(await complete("nginx-lb", "run", "--listen-host", "")).toEqual([]);
    // After a flag's value, flags again.
    expect(await complete("nginx-lb", "run", "--services", "x.json", "--no-w")).toEqual(["--no-watch"]);
  });
});
