import { readFile } from "node:fs/promises";
import type { Checked, Problem } from "../model/problem.js";
import { tok } from "../render/tokens.js";

/** The account nginx's workers run as when nginx starts as root: names for nginx.conf, ids for the state dir. */
export interface WorkerUser {
  readonly name: string;
  readonly group: string;
  readonly uid: number;
  readonly gid: number;
}

/** Where the accounts are read from, and who nginx-lb runs as (injected, so tests need not be root). */
export interface AccountSource {
  readonly uid: number;
  readonly passwdFile: string;
  readonly groupFile: string;
}

/** This machine's accounts and this process's uid. */
export function systemAccounts(): AccountSource {
  return { uid: process.getuid?.() ?? 0, passwdFile: "/etc/passwd", groupFile: "/etc/group" };
}

export const NGINX_USER_FLAG = "--nginx-user";
/** Debian's nginx package creates it; a user only nginx (and other web servers) run as. */
export const DEFAULT_NGINX_USER = "www-data";
const FALLBACK_NGINX_USER = "nobody";

/** The `name:x:id:...` lines of /etc/passwd or /etc/group: name -> the fields after it. */
function entries(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [name, ...fields] = line.split(":");
    if (name && !name.startsWith("#") && !out.has(name)) out.set(name, fields);
  }
  return out;
}

const problem = (message: string): Problem => ({ code: "invalid_flag", path: NGINX_USER_FLAG, message });

/**
 * Decides who nginx's workers run as, from the flag and the account files' text. Not root: nobody to switch to (nginx
 * cannot change user), so null. Root: the named user, else www-data, else nobody with a warning (nobody is shared
 * with every other unprivileged process, which could then signal or trace the workers). Root is refused: workers
 * parse every client's bytes.
 */
export function chooseWorkerUser(
  given: string | undefined,
  isRoot: boolean,
  passwd: string,
  group: string,
): Checked<WorkerUser | null> {
  const fail = (message: string): Checked<WorkerUser | null> => ({
    ok: false,
    errors: [problem(message)],
    warnings: [],
  });
  if (given !== undefined) {
    try {
      tok.user(given);
    } catch {
      return fail(
        `must be a user name of a-z 0-9 _ - (at most 32, not starting with a digit or -), got ${JSON.stringify(given)}`,
      );
    }
  }
  if (!isRoot)
    return {
      ok: true,
      value: null,
      warnings:
        given === undefined
          ? []
          : [problem("ignored: nginx-lb does not run as root, so nginx's workers run as its own user")],
    };
  const users = entries(passwd);
  const name =
    given ??
    (users.has(DEFAULT_NGINX_USER)
      ? DEFAULT_NGINX_USER
      : users.has(FALLBACK_NGINX_USER)
        ? FALLBACK_NGINX_USER
        : undefined);
  if (name === undefined)
    return fail(
      `no ${DEFAULT_NGINX_USER} or ${FALLBACK_NGINX_USER} user for nginx's workers: create a dedicated user ` +
        `(useradd --system --no-create-home --shell /usr/sbin/nologin nginx-lb) and pass ${NGINX_USER_FLAG} nginx-lb`,
    );
  const fields = users.get(name);
  if (fields === undefined)
    return fail(
      `no user ${JSON.stringify(name)} in /etc/passwd: create it (useradd --system --no-create-home --shell ` +
        `/usr/sbin/nologin ${name}) or pass an existing user`,
    );
  const uid = Number(fields[1]);
  const gid = Number(fields[2]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || fields[1] === "" || fields[2] === "")
    return fail(`the /etc/passwd entry of ${JSON.stringify(name)} has no numeric uid and gid: fix it`);
  if (uid === 0) return fail(`${JSON.stringify(name)} is root: nginx's workers need an unprivileged user`);
  const groupName = [...entries(group)].find(([, f]) => f[1] !== "" && Number(f[1]) === gid)?.[0];
  if (groupName === undefined)
    return fail(`the primary group (gid ${gid}) of ${JSON.stringify(name)} has no entry in /etc/group: add one`);
  try {
    tok.user(groupName);
  } catch {
    return fail(
      `the primary group of ${JSON.stringify(name)} is named ${JSON.stringify(groupName)}, which nginx-lb does not write into nginx.conf: pick a user whose group has a plain name`,
    );
  }
  const warnings =
    given === undefined && name === FALLBACK_NGINX_USER
      ? [
          problem(
            `nginx's workers run as ${FALLBACK_NGINX_USER} (there is no ${DEFAULT_NGINX_USER} user), sharing a uid ` +
              `with other unprivileged processes, which can signal or trace them: create a dedicated user and pass ` +
              `${NGINX_USER_FLAG} USER`,
          ),
        ]
      : [];
  return { ok: true, value: { name, group: groupName, uid, gid }, warnings };
}

/** chooseWorkerUser over the account files; an unreadable file is an error naming it. */
export async function resolveWorkerUser(
  given: string | undefined,
  accounts: AccountSource = systemAccounts(),
): Promise<Checked<WorkerUser | null>> {
  const isRoot = accounts.uid === 0;
  if (!isRoot) return chooseWorkerUser(given, false, "", "");
  try {
    const [passwd, group] = await Promise.all([
      readFile(accounts.passwdFile, "utf8"),
      readFile(accounts.groupFile, "utf8"),
    ]);
    return chooseWorkerUser(given, true, passwd, group);
  } catch (e) {
    return { ok: false, errors: [problem(`cannot read the accounts: ${(e as Error).message}`)], warnings: [] };
  }
}
