import { describe, expect, it } from "vitest";
import { bindFailures, summariseNginxError } from "./nginx-errors.js";

const held = [
  "nginx exited (code 1): nginx: [emerg] bind() to 127.0.0.1:18081 failed (98: Address already in use)",
  ...Array.from({ length: 4 }, () => "nginx: [emerg] bind() to 127.0.0.1:18081 failed (98: Address already in use)"),
  "nginx: [emerg] still could not bind()",
].join("\n");

describe("summariseNginxError", () => {
  it("says a held port once, with its holder, instead of nginx's five attempts", () => {
    const s = summariseNginxError(held, new Map([[18081, "held by pid 42 (python3)"]]));
    expect(s).toBe(
      "nginx exited (code 1): port 18081 (127.0.0.1:18081): Address already in use, held by pid 42 (python3): " +
        "stop that process (a previous instance still draining frees it by itself) or change the server's port",
    );
  });

  it("says a privileged port needs root or CAP_NET_BIND_SERVICE", () => {
    const s = summariseNginxError(
      "nginx exited (code 1): nginx: [emerg] bind() to 0.0.0.0:80 failed (13: Permission denied)",
    );
    expect(s).toContain("port 80 (0.0.0.0:80): Permission denied: ports under 1024 need root or CAP_NET_BIND_SERVICE");
    expect(s).toContain("CAP_NET_BIND_SERVICE");
  });

  it("keeps each other error once, without times and pids, naming the directive and line", () => {
    const line = (pid: number) => `2026/12/02 17:00:00 [emerg] ${pid}#0: unknown directive "foo" in /x/nginx.conf:12`;
    expect(summariseNginxError([line(1), line(2), line(3)].join("\n"))).toBe(
      'unknown directive "foo" in /x/nginx.conf:12',
    );
  });

  it("summarises the causes the log watch joins with |", () => {
    expect(
      summariseNginxError(
        "bind() to [::]:8080 failed (98: Address already in use) | still could not bind() | " +
          'unknown directive "x" in /c:3',
      ),
    ).toBe(
      "port 8080 ([::]:8080): Address already in use: stop that process (a previous instance still draining frees " +
        'it by itself) or change the server\'s port; unknown directive "x" in /c:3',
    );
  });

  it("leaves text without nginx errors as it was", () => {
    expect(summariseNginxError("connect ECONNREFUSED 127.0.0.1:1 ")).toBe("connect ECONNREFUSED 127.0.0.1:1");
  });

  it("lists each failed address once", () => {
    expect(bindFailures(held)).toEqual([
      { address: "127.0.0.1", port: 18081, cause: "in-use", reason: "Address already in use" },
    ]);
  });
});
