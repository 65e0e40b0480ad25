import { describe, expect, it } from "vitest";
import { STATUS_LINE_MAX, statusLine } from "./status-line.js";

describe("statusLine", () => {
  it("reads the code of a whole line, with or without a reason, CRLF or LF", () => {
    expect(statusLine("HTTP/1.1 200 OK\r\nServer: x\r\n")).toEqual({ kind: "status", status: 200 });
    expect(statusLine("HTTP/1.0 503\r\n")).toEqual({ kind: "status", status: 503 });
    expect(statusLine("HTTP/1.1 404 Not Found\n")).toEqual({ kind: "status", status: 404 });
  });
  it("waits for the rest of a line split anywhere", () => {
    const line = "HTTP/1.1 204 No Content\r\n";
    for (let i = 0; i < line.length - 1; i++) expect(statusLine(line.slice(0, i)).kind).toBe("incomplete");
  });
  it("refuses other protocols at their first bytes, and lines that are no status line", () => {
    expect(statusLine("SSH-2.0-OpenSSH")).toEqual({ kind: "invalid" });
    expect(statusLine("+OK redis")).toEqual({ kind: "invalid" });
    expect(statusLine("HTTP/2 200\r\n")).toEqual({ kind: "invalid" });
    expect(statusLine("HTTP/1.1 20 OK\r\n")).toEqual({ kind: "invalid" });
    expect(statusLine("HTTP/1.1 200OK\r\n")).toEqual({ kind: "invalid" });
    expect(statusLine("HTTP/1.1 600 x\r\n")).toEqual({ kind: "invalid" });
  });
  it("gives up on a line longer than any status line", () => {
    expect(statusLine(`HTTP/1.1 200 ${"x".repeat(STATUS_LINE_MAX)}`)).toEqual({ kind: "invalid" });
    expect(statusLine(`HTTP/1.1 200 ${"x".repeat(STATUS_LINE_MAX)}\r\n`)).toEqual({ kind: "invalid" });
  });
});
