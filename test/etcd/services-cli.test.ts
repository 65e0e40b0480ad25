/**
 * `nginx-lb services ...` as an operator runs it, against a real etcd: push validates (TLS included) and writes
 * guarded, get round-trips, diff and --dry-run write nothing, set and delete, a push larger than one transaction,
 * and two concurrent pushes of which exactly one wins.
 */
import { execFile, spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startEtcd, waitFor, type EtcdServer } from "../helpers/etcd.js";
import { tempDir } from "../helpers/nginx.js";
import { makeCa, makeLeaf, type Pem } from "../helpers/tls.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let etcd: EtcdServer;
let dir: string;
let pem: Pem;
beforeAll(async () => {
  [etcd, dir] = await Promise.all([startEtcd(), tempDir("nginx-lb-services-cli-")]);
  pem = await makeLeaf(await makeCa(dir), dir, { names: ["t.test"] });
});
afterAll(async () => {
  await etcd?.destroy();
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
/** Runs the real CLI. */
function cli(args: string[]): Promise<Result> {
  return started(args).done;
}
/** Starts the real CLI: its pid, and its result. */
function started(args: string[]): { pid: number; done: Promise<Result> } {
  let pid = 0;
  const done = new Promise<Result>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/main.ts"), ...args], {
      cwd: ROOT,
      env: { ...process.env, NGINX_LB_ETCD_ENDPOINTS: etcd.endpoint },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
    pid = child.pid ?? 0;
  });
  return { pid, done };
}
/** Whether each of these processes holds a TCP connection to etcd (a frozen etcd's kernel still accepts them). */
async function connectedToEtcd(pids: number[]): Promise<boolean> {
  const port = new URL(etcd.endpoint).port;
  const out = await new Promise<string>((resolve) =>
    execFile("ss", ["-Htnp", "state", "established", `( dport = :${port} )`], (_e, stdout) => resolve(stdout)),
  );
  return pids.every((pid) => out.includes(`pid=${pid},`));
}
const route = (app: string) => ({ "/": { app, service: "web", port: 8080 } });
async function file(name: string, servers: unknown[]): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, JSON.stringify({ version: "0.1", servers }, null, 2));
  return f;
}
const keys = async (prefix: string) =>
  (await etcd.ctl(["get", "--prefix", "--keys-only", `${prefix}/`])).stdout.split("\n").filter(Boolean);
const sortServers = (doc: { servers: { domain_name: string }[] }) =>
  [...doc.servers].sort((a, b) => a.domain_name.localeCompare(b.domain_name));

describe("nginx-lb services", () => {
  test("push, get round trip, diff, --dry-run, set, delete", async () => {
    const p = "/cli1/services";
    const pf = ["--services-etcd-prefix", p];
    const servers = [
      { domain_name: "a.test", frontend_port: 80, routes: route("a") },
      {
        domain_name: "t.test",
        frontend_port: 80,
        ssl_port: 443,
        ssl_certificate: pem.cert,
        ssl_certificate_key: pem.key,
        routes: route("t"),
      },
    ];
    const f1 = await file("one.json", servers);
    const dry = await cli(["services", "push", f1, "--dry-run", ...pf]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^\+ a\.test:80 \(routes \/\)\n\+ t\.test:80 \+tls:443 \(routes \/\)\n$/);
    expect(`${dry.stdout}${dry.stderr}`).not.toMatch(/PRIVATE KEY|BEGIN CERT/);
    expect(dry.stderr).toMatch(/dry run: nothing written/);
    expect(await keys(p)).toEqual([]);

    const pushed = await cli(["services", "push", f1, ...pf]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(await keys(p)).toEqual([`${p}/a.test:80`, `${p}/t.test:80`]);
    expect((await cli(["services", "diff", f1, ...pf])).code).toBe(0);

    const out = join(dir, "got.json");
    const got = await cli(["services", "get", "--out", out, ...pf]);
    expect(got.code, got.stderr).toBe(0);
    const doc = JSON.parse(await readFile(out, "utf8")) as { servers: { domain_name: string }[] };
    expect(sortServers(doc)).toEqual(sortServers({ servers }));
    expect((await cli(["validate", out])).code).toBe(0);
    // What get wrote pushes back as no change.
    const again = await cli(["services", "push", out, ...pf]);
    expect(again.stderr).toMatch(/already equals/);

    const f2 = await file("two.json", [{ domain_name: "a.test", frontend_port: 80, routes: route("a2") }]);
    const diff = await cli(["services", "diff", f2, ...pf]);
    expect([diff.code, diff.stdout]).toEqual([
      1,
      "- t.test:80\n~ a.test:80: route / changed: a-web:8080 -> a2-web:8080\n",
    ]);
    const before = await etcd.revision();
    expect((await cli(["services", "push", "--dry-run", f2, ...pf])).code).toBe(0);
    expect(await etcd.revision()).toBe(before);

    const one = join(dir, "b.json");
    await writeFile(one, JSON.stringify({ domain_name: "B.test", frontend_port: 81, routes: route("b") }));
    const set = await cli(["services", "set", one, ...pf]);
    expect(set.code, set.stderr).toBe(0);
    expect(await keys(p)).toContain(`${p}/b.test:81`);
    // A server that takes a TLS port as plain HTTP conflicts with the table: refused, nothing written.
    await writeFile(one, JSON.stringify({ domain_name: "c.test", frontend_port: 443, routes: route("c") }));
    const clash = await cli(["services", "set", one, ...pf]);
    expect([clash.code, clash.stderr]).toEqual([1, expect.stringMatching(/port 443 .*t\.test:80/)]);
    expect(await keys(p)).not.toContain(`${p}/c.test:443`);

    expect((await cli(["services", "delete", "b.test:81", ...pf])).code).toBe(0);
    expect((await cli(["services", "delete", "b.test:81", ...pf])).code).toBe(1);
    expect(await keys(p)).not.toContain(`${p}/b.test:81`);
  });

  test("an invalid file (a key that does not match its certificate) writes nothing", async () => {
    const p = "/cli2/services";
    const other = await makeLeaf(await makeCa(dir), dir, { names: ["t.test"] });
    const f = await file("bad.json", [
      {
        domain_name: "t.test",
        ssl_port: 443,
        ssl_certificate: pem.cert,
        ssl_certificate_key: other.key,
        routes: route("t"),
      },
    ]);
    const r = await cli(["services", "push", f, "--services-etcd-prefix", p]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/servers\[0\]\.ssl_certificate/);
    expect(r.stderr).not.toMatch(/PRIVATE KEY/);
    expect(await keys(p)).toEqual([]);
  });

  test("a push larger than one transaction goes in guarded batches and round-trips", async () => {
    const p = "/cli3/services";
    const servers = Array.from({ length: 300 }, (_, i) => ({
      domain_name: `s${i}.test`,
      frontend_port: 80,
      routes: route(`a${i}`),
    }));
    const f = await file("many.json", servers);
    const r = await cli(["services", "push", f, "--services-etcd-prefix", p]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/applied 300 write\(s\) in 3 transaction\(s\)/);
    const got = await cli(["services", "get", "--services-etcd-prefix", p]);
    expect(sortServers(JSON.parse(got.stdout) as { servers: { domain_name: string }[] })).toEqual(
      sortServers({ servers }),
    );
  });

  test("two concurrent pushes read at one revision: exactly one wins, the loser exits 1 naming the conflict", async () => {
    const p = "/cli4/services";
    const fa = await file("ca.json", [{ domain_name: "x.test", frontend_port: 80, routes: route("from-a") }]);
    const fb = await file("cb.json", [{ domain_name: "x.test", frontend_port: 80, routes: route("from-b") }]);
    // etcd frozen while both start and connect: both read once it thaws, at the same revision, before either writes.
    let conflicts = 0;
    for (let round = 0; round < 3 && conflicts === 0; round++) {
      etcd.pause();
      const both = [
        started(["services", "push", fa, "--services-etcd-prefix", p]),
        started(["services", "push", fb, "--services-etcd-prefix", p]),
      ];
      try {
        await waitFor(
          "both pushes connected to the frozen etcd",
          () => connectedToEtcd(both.map((b) => b.pid)),
          30_000,
        );
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        etcd.resume();
      }
      const results = await Promise.all(both.map((b) => b.done));
      const codes = results.map((x) => x.code).sort();
      if (codes[0] === 0 && codes[1] === 1) {
        conflicts++;
        const loser = results.find((x) => x.code === 1);
        expect(loser?.stderr).toMatch(
          /conflict: the table under \/cli4\/services changed after revision \d+ \(another writer\): nothing was written/,
        );
        const winner = results.find((x) => x.code === 0) === results[0] ? "from-a" : "from-b";
        const now = (await etcd.ctl(["get", `${p}/x.test:80`, "--print-value-only"])).stdout;
        expect(now).toContain(winner);
      } else {
        // Not overlapping after all: each applied in turn, never a failure of another kind.
        expect(codes).toEqual([0, 0]);
      }
      await etcd.ctl(["del", "--prefix", `${p}/`]);
    }
    expect(conflicts).toBe(1);
  });

  test("history lists the changes; rollback restores a revision (validated, guarded); a compacted one is refused", async () => {
    const p = "/cli5/services";
    const pf = ["--services-etcd-prefix", p];
    const v1 = [
      { domain_name: "a.test", frontend_port: 80, routes: route("one") },
      { domain_name: "b.test", frontend_port: 80, routes: route("one") },
    ];
    const f1 = await file("h1.json", v1);
    const f2 = await file("h2.json", [{ domain_name: "a.test", frontend_port: 80, routes: route("two") }]);
    expect((await cli(["services", "push", f1, ...pf])).code).toBe(0);
    const r1 = await etcd.revision();
    expect((await cli(["services", "push", f2, ...pf])).code).toBe(0);
    const r2 = await etcd.revision();
    const history = await cli(["services", "history", ...pf]);
    expect(history.code, history.stderr).toBe(0);
    expect(history.stdout).toBe(`${r1}  +a.test:80 +b.test:80\n${r2}  -b.test:80 ~a.test:80\n`);

    const dry = await cli(["services", "rollback", "--revision", String(r1), "--dry-run", ...pf]);
    expect([dry.code, await etcd.revision()]).toEqual([0, r2]);
    const back = await cli(["services", "rollback", "--revision", String(r1), ...pf]);
    expect(back.code, back.stderr).toBe(0);
    const got = await cli(["services", "get", ...pf]);
    expect(JSON.parse(got.stdout)).toEqual({ version: "0.1", servers: v1 });

    await etcd.compact();
    const gone = await cli(["services", "rollback", "--revision", String(r1), ...pf]);
    expect([gone.code, gone.stderr]).toEqual([1, expect.stringMatching(/revision \d+ is compacted/)]);
  });
});
