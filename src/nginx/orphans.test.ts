import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { findOrphans, parseStat, readNginxProcesses, retireOrphans, type ProcEntry } from "./orphans.js";

const DIR = "/var/lib/nginx-lb";
const OTHER = "/var/lib/nginx-lb-other";
const ours = { dir: DIR, conf: `${DIR}/nginx.conf`, deadMaster: 700 };

const master = (pid: number, dir: string, extra = ""): ProcEntry => ({
  pid,
  ppid: 1,
  pgid: pid,
  state: "S",
  cmdline: `nginx: master process /usr/sbin/nginx -p ${dir}/ -c ${dir}/nginx.conf -e ${dir}/logs/error.log${extra}`,
  files: [`${dir}/logs/error.log`],
});
const worker = (pid: number, ppid: number, pgid: number, files: string[] | null): ProcEntry => ({
  pid,
  ppid,
  pgid,
  state: "S",
  cmdline: "nginx: worker process",
  files,
});

describe("findOrphans", () => {
  test("lists masters and masterless workers of our prefix only, with the reason", () => {
    const table: ProcEntry[] = [
      master(100, DIR), // a stray master of ours
      worker(101, 100, 100, [`${DIR}/logs/error.log`]), // its worker: goes with its master
      master(200, OTHER), // another prefix's master and worker: never ours
      worker(201, 200, 200, [`${OTHER}/logs/error.log`]),
      worker(301, 1, 300, [`${DIR}/logs/error.log`, "socket:[1234]"]), // orphan of ours, by its files
      worker(401, 1, 400, [`${OTHER}/logs/error.log`]), // orphan of another prefix
      worker(402, 1, 700, [`${OTHER}/logs/error.log`]), // our dead master's group, but its files say otherwise
      worker(701, 1, 700, null), // files unreadable: ours by the dead master's group
      worker(702, 1, 999, null), // files unreadable, another group: not provably ours
      { ...worker(801, 1, 800, [`${DIR}/logs/error.log`]), state: "Z" }, // a zombie holds no port
      { ...worker(901, 1, 900, [`${DIR}-2/logs/error.log`]) }, // a sibling dir sharing our name as a prefix
    ];
    const found = findOrphans(table, ours);
    expect(found.map((o) => [o.pid, o.role])).toEqual([
      [100, "master"],
      [301, "worker"],
      [701, "worker"],
    ]);
    expect(found.find((o) => o.pid === 701)?.why).toContain("dead master 700");
    expect(found.find((o) => o.pid === 301)?.why).toContain(DIR);
  });

  test("spares the kept master and our own children; one-shot nginx runs (nginx -t) are never masters", () => {
    const table: ProcEntry[] = [
      master(100, DIR),
      { ...master(110, DIR), cmdline: `/usr/sbin/nginx -t -q -p ${DIR}/ -c ${DIR}/nginx.conf` },
      { ...master(120, DIR), cmdline: `/usr/sbin/nginx -p ${DIR}/ -c ${DIR}/nginx.conf -g daemon off;` },
    ];
    expect(findOrphans(table, ours, new Set([100])).map((o) => o.pid)).toEqual([120]);
    expect(findOrphans(table, ours, new Set([100, 120]))).toEqual([]);
  });

  test("a master named by -c alone, absolute or relative to -p, is ours", () => {
    const byConf = { ...master(100, OTHER), cmdline: `nginx: master process nginx -c ${DIR}/nginx.conf` };
    const relative = { ...master(101, OTHER), cmdline: `nginx: master process nginx -p ${DIR} -c nginx.conf` };
    const elsewhere = { ...master(102, OTHER), cmdline: `nginx: master process nginx -c /etc/nginx/nginx.conf` };
    expect(findOrphans([byConf, relative, elsewhere], ours).map((o) => o.pid)).toEqual([100, 101]);
  });
});

test("parseStat counts fields from the last parenthesis (a command may hold spaces and parentheses)", () => {
  expect(parseStat("42 (nginx: a (b) c) S 1 40 40 0 -1")).toEqual({ state: "S", ppid: 1, pgid: 40 });
  expect(parseStat("garbage")).toBeNull();
});

describe("retireOrphans", () => {
  /** A process table that obeys signals: SIGQUIT ends the processes in `quits`, SIGKILL ends anything. */
  function fakeSystem(table: ProcEntry[], quits: Set<number>) {
    let rows = [...table];
    const signals: string[] = [];
    let clock = 0;
    return {
      signals,
      deps: {
        table: async () => rows,
        running: async (pid: number) => rows.some((r) => r.pid === pid),
        signal: (pid: number, sig: NodeJS.Signals) => {
          signals.push(`${sig} ${pid}`);
          if (sig === "SIGKILL" || quits.has(pid)) {
            rows = rows.filter((r) => r.pid !== pid);
            // Killing a master orphans its workers: they are re-parented to pid 1.
            rows = rows.map((r) => (r.ppid === pid ? { ...r, ppid: 1 } : r));
          }
        },
        sleep: async (ms: number) => {
          clock += ms;
        },
        now: () => clock,
      },
    };
  }

  test("SIGQUIT first; SIGKILL after the grace for what stays; the workers a killed master orphans go too", async () => {
    const table = [
      master(100, DIR),
      worker(101, 100, 100, [`${DIR}/logs/error.log`]),
      worker(301, 1, 300, [`${DIR}/logs/error.log`]),
      master(200, OTHER),
      worker(201, 200, 200, [`${OTHER}/logs/error.log`]),
    ];
    // The stray master ignores SIGQUIT (stuck); its worker and the orphan quit when asked.
    const sys = fakeSystem(table, new Set([101, 301]));
    const r = await retireOrphans(ours, new Set(), sys.deps, 500);
    expect(sys.signals).toEqual(["SIGQUIT 100", "SIGQUIT 301", "SIGKILL 100", "SIGQUIT 101"]);
    expect(r.found.map((o) => o.pid)).toEqual([100, 301, 101]);
    expect(r.killed).toEqual([100]);
    expect(r.left).toEqual([]);
    expect((await sys.deps.table()).map((p) => p.pid)).toEqual([200, 201]);
  });

  test("nothing of ours: no signal at all", async () => {
    const sys = fakeSystem([master(200, OTHER), worker(401, 1, 400, [`${OTHER}/logs/error.log`])], new Set());
    const r = await retireOrphans(ours, new Set(), sys.deps, 500);
    expect(r).toEqual({ found: [], killed: [], left: [] });
    expect(sys.signals).toEqual([]);
  });
});

describe("readNginxProcesses", () => {
  const roots: string[] = [];
  afterAll(async () => Promise.all(roots.map((r) => rm(r, { recursive: true, force: true }))));

  test("reads nginx entries of a /proc-shaped tree: stat, retitled cmdline, open files; skips the rest", async () => {
    const root = await mkdtemp(join(tmpdir(), "nginx-lb-proc-"));
    roots.push(root);
    const proc = async (pid: number, cmdline: string, stat: string, fds: string[] | null) => {
      await mkdir(join(root, String(pid)));
      await writeFile(join(root, String(pid), "cmdline"), cmdline);
      await writeFile(join(root, String(pid), "stat"), stat);
      if (fds === null) return;
      await mkdir(join(root, String(pid), "fd"));
      await Promise.all(fds.map((f, i) => symlink(f, join(root, String(pid), "fd", String(i)))));
    };
    // nginx pads its retitled argv with NULs; a plain argv separates arguments with NULs.
    await proc(10, "nginx: worker process\0\0\0", "10 (nginx) S 1 9 9 0", [`${DIR}/logs/error.log`]);
    await proc(11, `/usr/sbin/nginx\0-p\0${DIR}/\0`, "11 (nginx) S 1 11 11 0", null);
    await proc(12, "node\0server.js\0", "12 (node) S 1 12 12 0", []);
    await writeFile(join(root, "uptime"), "1 1");
    const got = (await readNginxProcesses(root)).sort((a, b) => a.pid - b.pid);
    expect(got).toEqual([
      { pid: 10, ppid: 1, pgid: 9, state: "S", cmdline: "nginx: worker process", files: [`${DIR}/logs/error.log`] },
      { pid: 11, ppid: 1, pgid: 11, state: "S", cmdline: `/usr/sbin/nginx -p ${DIR}/`, files: null },
    ]);
    expect(await readNginxProcesses(join(root, "missing"))).toEqual([]);
  });
});
