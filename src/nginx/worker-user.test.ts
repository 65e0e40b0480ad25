import { describe, expect, test } from "vitest";
import { chooseWorkerUser, resolveWorkerUser } from "./worker-user.js";

const PASSWD = [
  "root:x:0:0:root:/root:/bin/bash",
  "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
  "nginx-lb:x:998:997::/nonexistent:/usr/sbin/nologin",
  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
  "odd:x:1000:1000::/home/odd:/bin/sh",
  "",
].join("\n");
const GROUP = ["root:x:0:", "www-data:x:33:", "nginx-lb:x:997:", "nogroup:x:65534:", "Odd Group:x:1000:", ""].join(
  "\n",
);
const without = (text: string, name: string) =>
  text
    .split("\n")
    .filter((l) => !l.startsWith(`${name}:`))
    .join("\n");

describe("chooseWorkerUser", () => {
  test("as root: www-data by default, with its primary group", () => {
    const r = chooseWorkerUser(undefined, true, PASSWD, GROUP);
    expect(r).toEqual({ ok: true, value: { name: "www-data", group: "www-data", uid: 33, gid: 33 }, warnings: [] });
  });

  test("as root without www-data: nobody, with one warning saying what to do", () => {
    const r = chooseWorkerUser(undefined, true, without(PASSWD, "www-data"), GROUP);
    expect(r.ok && r.value).toEqual({ name: "nobody", group: "nogroup", uid: 65534, gid: 65534 });
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toMatchObject({ path: "--nginx-user" });
    expect(r.warnings[0]?.message).toMatch(/sharing a uid.*create a dedicated user and pass --nginx-user/);
  });

  test("as root with neither: an error naming the flag", () => {
    const r = chooseWorkerUser(undefined, true, without(without(PASSWD, "www-data"), "nobody"), GROUP);
    expect(!r.ok && r.errors[0]).toMatchObject({ path: "--nginx-user" });
  });

  test("a named user is used as it is (a dedicated user, no warning)", () => {
    const r = chooseWorkerUser("nginx-lb", true, PASSWD, GROUP);
    expect(r).toEqual({ ok: true, value: { name: "nginx-lb", group: "nginx-lb", uid: 998, gid: 997 }, warnings: [] });
  });

  test.each([
    ["nosuchuser", /no user "nosuchuser" in \/etc\/passwd: create it/],
    ["root", /is root: .*unprivileged user/],
    ["odd", /primary group of "odd" is named "Odd Group"/],
    ["Www-Data", /must be a user name/],
    ["a;b", /must be a user name/],
    ["x".repeat(33), /must be a user name/],
    ["-x", /must be a user name/],
  ])("%s is refused, naming the flag", (name, message) => {
    const r = chooseWorkerUser(name, true, PASSWD, GROUP);
    expect(!r.ok && r.errors[0]?.path).toBe("--nginx-user");
    expect(!r.ok && r.errors[0]?.message).toMatch(message);
  });

  test("a user without a group entry for its gid is refused", () => {
    const r = chooseWorkerUser("nginx-lb", true, PASSWD, without(GROUP, "nginx-lb"));
    expect(!r.ok && r.errors[0]?.message).toMatch(/gid 997.*no entry in \/etc\/group/);
  });

  test("not root: no user (nginx cannot switch); a given one is still checked, then ignored with a warning", () => {
    expect(chooseWorkerUser(undefined, false, PASSWD, GROUP)).toEqual({ ok: true, value: null, warnings: [] });
    const given = chooseWorkerUser("nginx-lb", false, "", "");
    expect(given.ok && given.value).toBeNull();
    expect(given.warnings[0]?.message).toMatch(/ignored: nginx-lb does not run as root/);
    expect(chooseWorkerUser("a b", false, "", "").ok).toBe(false);
  });
});

describe("resolveWorkerUser", () => {
  test("an unreadable account file is an error naming the flag and the file", async () => {
    const r = await resolveWorkerUser(undefined, {
      uid: 0,
      passwdFile: "/nonexistent/passwd",
      groupFile: "/etc/group",
    });
    expect(!r.ok && r.errors[0]?.path).toBe("--nginx-user");
    expect(!r.ok && r.errors[0]?.message).toMatch(/\/nonexistent\/passwd/);
  });

  test("not root: the files are not read", async () => {
    const r = await resolveWorkerUser(undefined, { uid: 1000, passwdFile: "/nonexistent", groupFile: "/nonexistent" });
    expect(r).toEqual({ ok: true, value: null, warnings: [] });
  });
});
