import { describe, expect, test } from "vitest";
import { nginxFlagProblems } from "./nginx-flags.js";

describe("run flags that reach nginx.conf", () => {
  test("the defaults and well-formed values pass", () => {
    expect(nginxFlagProblems({ stateDir: "/var/lib/nginx-lb" })).toEqual([]);
    for (const listenHost of ["127.0.0.1", "::", "::1", "*"])
      expect(nginxFlagProblems({ stateDir: "/s", listenHost, controlPort: "9901", workerProcesses: "auto" })).toEqual(
        [],
      );
    expect(nginxFlagProblems({ stateDir: "/s", workerProcesses: "4" })).toEqual([]);
  });

  test("each malformed value is an error naming its flag and the value", () => {
    const problems = nginxFlagProblems({
      stateDir: "/var/lib/nginx lb",
      listenHost: "localhost",
      controlPort: "99x",
      workerProcesses: "0",
    });
    expect(problems.map((p) => p.path)).toEqual([
      "--state-dir",
      "--listen-host",
      "--control-port",
      "--worker-processes",
    ]);
    expect(problems[1]?.message).toContain('"localhost"');
    expect(nginxFlagProblems({ stateDir: "/s", controlPort: "70000" }).map((p) => p.path)).toEqual(["--control-port"]);
  });

  test("render names its own flag for the output directory", () => {
    expect(nginxFlagProblems({ stateDir: "/tmp/a b" }, "--out")).toEqual([
      expect.objectContaining({ path: "--out", message: expect.stringContaining('got "/tmp/a b"') }),
    ]);
  });
});
