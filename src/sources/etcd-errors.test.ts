import { describe, expect, test } from "vitest";
import { describeEtcdError, etcdFailure, failedEndpoint, formatDelay } from "./etcd-errors.js";

const U = "http://10.0.0.5:2379";
const err = (message: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(message), extra);

describe("describeEtcdError", () => {
  test("a refused connection (gRPC's wording, empty resolution note and all)", () =>
    expect(
      describeEtcdError(
        err(
          "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 10.0.0.5:2379. Resolution note: ",
        ),
        U,
        2_000,
      ),
    ).toBe(`etcd at ${U} refused the connection; retrying in 2s; serving the last known endpoints`));
  test("node's refused connection (v2)", () =>
    expect(describeEtcdError(err("connect ECONNREFUSED 10.0.0.5:2379", { code: "ECONNREFUSED" }), U, 200)).toBe(
      `etcd at ${U} refused the connection; retrying in 0.2s; serving the last known endpoints`,
    ));
  test("a dropped stream", () =>
    expect(etcdFailure(err("14 UNAVAILABLE: Connection dropped"))).toBe("closed the connection"));
  test("a long-poll cut mid-answer", () => expect(etcdFailure(err("aborted"))).toBe("closed the connection"));
  test("a circuit breaker never reaches the operator", () =>
    expect(etcdFailure(err("Execution prevented because the circuit breaker is open"))).not.toMatch(/circuit/));
  test("a deadline", () =>
    expect(etcdFailure(err("4 DEADLINE_EXCEEDED: Deadline exceeded"))).toBe("did not answer in time"));
  test("an unknown host", () =>
    expect(etcdFailure(err("getaddrinfo ENOTFOUND etcd.invalid", { code: "ENOTFOUND" }))).toMatch(/does not resolve/));
  test("an untrusted certificate names the flag", () =>
    expect(etcdFailure(err("self-signed certificate in certificate chain"))).toMatch(/--etcd-cacert/));
  test("plain http against a TLS port names the scheme", () =>
    expect(etcdFailure(err("write EPROTO wrong version number", { code: "EPROTO" }))).toMatch(
      /http:\/\/ against https/,
    ));
  test("rejected credentials name the user, never the password", () => {
    const s = etcdFailure(err("etcdserver: authentication failed, invalid user ID or password"), { username: "root" });
    expect(s).toBe('rejected the credentials of user "root" (check --etcd-username and the password)');
  });
  test("auth required without a user says which flag to pass", () =>
    expect(etcdFailure(err("etcdserver: user name is empty"))).toMatch(/pass --etcd-username/));
  test("an HTTP answer (v2) keeps etcd's own words", () =>
    expect(etcdFailure(err("etcd answered 500: raft internal error", { status: 500 }))).toBe(
      "answered HTTP 500: raft internal error",
    ));
  test("anything else: the message without gRPC codes or bug-report links", () =>
    expect(etcdFailure(err("13 INTERNAL: boom Please report this error at https://github.com/x"))).toBe(
      "failed: boom",
    ));
});

describe("helpers", () => {
  test("formatDelay: tenths below 10 s, whole seconds above", () =>
    expect([50, 200, 1_500, 9_940, 12_400].map(formatDelay)).toEqual(["0.1s", "0.2s", "1.5s", "9.9s", "12s"]));
  test("failedEndpoint: the one named in the message, else all", () => {
    const eps = ["http://10.0.0.5:2379", "http://10.0.0.6:2379"];
    expect(failedEndpoint(err("connect ECONNREFUSED 10.0.0.6:2379"), eps)).toBe("http://10.0.0.6:2379");
    expect(failedEndpoint(err("Connection dropped"), eps)).toBe("http://10.0.0.5:2379, http://10.0.0.6:2379");
  });
});
