/**
 * A real three-member etcd cluster on loopback for tests: each member with its own data dir and free client and peer
 * ports, found by `--initial-cluster`; a member can be killed (kill -9) and restarted on the same dir and ports.
 *
 *   const cluster = await startEtcdCluster();           // in beforeAll
 *   cluster.endpoints.join(",")                          // for --etcd-endpoints
 *   const i = await cluster.leader();                    // index of the member that leads now
 *   await cluster.kill(i); await cluster.start(i);       // SIGKILL, then back on the same data
 *   await cluster.waitHealthy();                         // every member answers and all agree on one leader
 *   await cluster.destroy();                             // in afterAll: every member gone, dirs removed
 *
 * Election settings: heartbeat 100 ms, election timeout 1 s (etcd's defaults). A shorter timeout elects faster after
 * a kill, but on a loaded 2-core box a member that misses a few heartbeats then starts needless elections, and the
 * tests that count leader changes would see them.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./nginx.js";
import { sleep } from "./wait.js";

const run = promisify(execFile);
const SIZE = 3;

/** Every member process any cluster started and not yet seen exit: killed if the test process exits first. */
const alive = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of alive) c.kill("SIGKILL");
});

export interface ClusterMember {
  readonly name: string;
  /** Client URL, `http://127.0.0.1:PORT`. */
  readonly endpoint: string;
  readonly dataDir: string;
  /** Whether its process runs (started and not seen exiting). */
  readonly running: boolean;
}

export interface MemberStatus {
  readonly endpoint: string;
  /** Member id as etcd prints it (decimal; uint64 kept as text). */
  readonly id: string;
  readonly leader: string;
  readonly revision: number;
  readonly raftTerm: number;
}

export interface EtcdCluster {
  readonly members: readonly ClusterMember[];
  /** The client URLs of all members, for `--etcd-endpoints` or `etcdctl --endpoints`. */
  readonly endpoints: readonly string[];
  /** etcdctl (v3) against every member; throws with its stderr on a non-zero exit unless `allowFail`. */
  ctl(
    args: readonly string[],
    options?: { allowFail?: boolean; endpoints?: readonly string[] },
  ): Promise<{ stdout: string; stderr: string; code: number }>;
  /** Status of each running member that answers (`etcdctl endpoint status`). */
  status(): Promise<MemberStatus[]>;
  /** Index of the member every answering member names as leader; waits (bounded) while there is none. */
  leader(timeoutMs?: number): Promise<number>;
  /** The store revision (through any member). */
  revision(): Promise<number>;
  /** kill -9 of one member; resolves when its process is gone. */
  kill(i: number): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s) of one member; resolves when its process is gone. */
  stop(i: number): Promise<void>;
  /** Starts a stopped member again on its data dir and ports; resolves when it answers. */
  start(i: number): Promise<void>;
  /** Stops every member. */
  stopAll(): Promise<void>;
  /** Starts every stopped member (together: a lone member of a stopped cluster waits for a quorum). */
  startAll(): Promise<void>;
  /** Waits until every member answers `endpoint health` and all name the same leader. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Freezes every member (SIGSTOP): connections are accepted by the kernel but never answered. */
  pauseAll(): void;
  /** Thaws every member (SIGCONT). */
  resumeAll(): void;
  /** Stops every member and removes the data dirs. */
  destroy(): Promise<void>;
}

interface Slot {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  child: ChildProcess | undefined;
  exited: Promise<void>;
  log: string;
}

/** Starts three members on fresh free ports and waits until the cluster has a leader and every member answers. */
export async function startEtcdCluster(): Promise<EtcdCluster> {
  const root = await mkdtemp(join(tmpdir(), "nginx-lb-etcd-cluster-"));
  const slots: Slot[] = Array.from({ length: SIZE }, (_, i) => ({
    name: `m${i}`,
    clientPort: 0,
    peerPort: 0,
    dataDir: join(root, `m${i}`),
    child: undefined,
    exited: Promise.resolve(),
    log: "",
  }));
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const endpoints = () => slots.map((s) => url(s.clientPort));
  const isRunning = (s: Slot) => s.child !== undefined && s.child.exitCode === null && s.child.signalCode === null;
  // Another cluster id per cluster: members of two clusters can never join each other.
  const token = `nginx-lb-test-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

  const ctl: EtcdCluster["ctl"] = async (args, o = {}) => {
    const flags = [
      `--endpoints=${(o.endpoints ?? endpoints()).join(",")}`,
      "--dial-timeout=2s",
      "--command-timeout=5s",
    ];
    try {
      const r = await run("etcdctl", [...flags, ...args], {
        env: { ...process.env, ETCDCTL_API: "3" },
        timeout: 30_000,
        maxBuffer: 64 << 20,
      });
      return { ...r, code: 0 };
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; code?: number };
      const r = {
        stdout: err.stdout ?? "",
        stderr: err.stderr ?? "",
        code: typeof err.code === "number" ? err.code : 1,
      };
      if (o.allowFail) return r;
      throw new Error(`etcdctl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
    }
  };

  const spawnMember = (s: Slot) => {
    const args = [
      `--name=${s.name}`,
      `--data-dir=${s.dataDir}`,
      `--listen-client-urls=${url(s.clientPort)}`,
      `--advertise-client-urls=${url(s.clientPort)}`,
      `--listen-peer-urls=${url(s.peerPort)}`,
      `--initial-advertise-peer-urls=${url(s.peerPort)}`,
      `--initial-cluster=${slots.map((o) => `${o.name}=${url(o.peerPort)}`).join(",")}`,
      `--initial-cluster-token=${token}`,
      "--initial-cluster-state=new",
      "--heartbeat-interval=100",
      "--election-timeout=1000",
      "--log-level=error",
      "--logger=zap",
    ];
    s.log = "";
    const c = spawn("etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
    s.child = c;
    alive.add(c);
    c.stderr?.on("data", (d: Buffer) => {
      s.log = (s.log + d.toString()).slice(-4000);
    });
    s.exited = new Promise((resolve) =>
      c.once("exit", () => {
        alive.delete(c);
        resolve();
      }),
    );
  };

  /** Waits until these members answer `endpoint health` (needs a quorum); false when one of them exited. */
  const waitAnswering = async (which: Slot[], timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (which.some((s) => !isRunning(s))) return false;
      const r = await ctl(["endpoint", "health"], { allowFail: true, endpoints: which.map((s) => url(s.clientPort)) });
      if (r.code === 0) return true;
      await sleep(100);
    }
    throw new Error(`etcd members ${which.map((s) => s.name).join(", ")} did not answer in ${timeoutMs} ms: ${logs()}`);
  };
  const logs = () => slots.map((s) => `${s.name}: ${s.log.trim().slice(-800)}`).join("\n");

  const stopSlot = async (s: Slot, signal: NodeJS.Signals) => {
    const c = s.child;
    if (!c || !isRunning(s)) return;
    c.kill(signal);
    c.kill("SIGCONT"); // a paused member acts on a SIGTERM only once thawed
    const timer = setTimeout(() => c.kill("SIGKILL"), 5_000);
    await s.exited;
    clearTimeout(timer);
  };

  const status = async (): Promise<MemberStatus[]> => {
    const out: MemberStatus[] = [];
    // One member at a time: etcdctl fails the whole command when one of several endpoints does not answer.
    for (const s of slots.filter(isRunning)) {
      const r = await ctl(["endpoint", "status", "-w", "json"], { allowFail: true, endpoints: [url(s.clientPort)] });
      if (r.code !== 0) continue;
      // Member ids are uint64: read the digits as written (JSON numbers lose precision past 2^53).
      const num = (field: string) => new RegExp(`"${field}":(\\d+)`).exec(r.stdout)?.[1] ?? "";
      out.push({
        endpoint: url(s.clientPort),
        id: num("member_id"),
        leader: num("leader"),
        revision: Number(num("revision")),
        raftTerm: Number(num("raft_term")),
      });
    }
    return out;
  };

  const leader = async (timeoutMs = 20_000): Promise<number> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const st = await status();
      const ids = new Set(st.map((x) => x.leader));
      const lead = st.find((x) => x.id === [...ids][0]);
      if (ids.size === 1 && lead && !ids.has("0")) return slots.findIndex((s) => url(s.clientPort) === lead.endpoint);
      await sleep(100);
    }
    throw new Error(`no etcd leader all members agree on within ${timeoutMs} ms: ${logs()}`);
  };

  const waitHealthy = async (timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    if (!(await waitAnswering(slots, timeoutMs))) throw new Error(`an etcd member exited: ${logs()}`);
    for (;;) {
      const st = await status();
      if (st.length === SIZE && new Set(st.map((x) => x.leader)).size === 1 && st[0]?.leader !== "0") return;
      if (Date.now() > deadline) throw new Error(`etcd cluster not healthy in ${timeoutMs} ms: ${JSON.stringify(st)}`);
      await sleep(100);
    }
  };

  const startAll = async () => {
    const stopped = slots.filter((s) => !isRunning(s));
    for (const s of stopped) spawnMember(s);
    if (!(await waitAnswering(stopped, 30_000))) throw new Error(`an etcd member exited at start: ${logs()}`);
  };

  // A port may be taken between finding and binding it (other tests run concurrently): a new cluster on fresh ports
  // and empty dirs. Only at the first start; a restart keeps the ports so clients reconnect.
  let started = false;
  for (let attempt = 0; attempt < 4 && !started; attempt++) {
    for (const s of slots) {
      s.clientPort = await freePort();
      s.peerPort = await freePort();
    }
    try {
      started = await (async () => {
        for (const s of slots) spawnMember(s);
        return waitAnswering(slots, 30_000);
      })();
    } finally {
      if (!started) {
        await Promise.all(slots.map((s) => stopSlot(s, "SIGKILL")));
        await Promise.all(slots.map((s) => rm(s.dataDir, { recursive: true, force: true })));
      }
    }
  }
  if (!started) {
    await rm(root, { recursive: true, force: true });
    throw new Error(`etcd cluster failed to start: ${logs()}`);
  }

  return {
    members: slots.map((s) => ({
      name: s.name,
      get endpoint() {
        return url(s.clientPort);
      },
      dataDir: s.dataDir,
      get running() {
        return isRunning(s);
      },
    })),
    get endpoints() {
      return endpoints();
    },
    ctl,
    status,
    leader,
    revision: async () => {
      const st = await status();
      return Math.max(0, ...st.map((x) => x.revision));
    },
    kill: (i) => stopSlot(member(slots, i), "SIGKILL"),
    stop: (i) => stopSlot(member(slots, i), "SIGTERM"),
    start: async (i) => {
      const s = member(slots, i);
      if (isRunning(s)) return;
      spawnMember(s);
      if (!(await waitAnswering([s], 30_000))) throw new Error(`etcd member ${s.name} exited at start: ${s.log}`);
    },
    stopAll: async () => {
      await Promise.all(slots.map((s) => stopSlot(s, "SIGTERM")));
    },
    startAll,
    waitHealthy,
    pauseAll: () => {
      for (const s of slots) if (isRunning(s)) s.child?.kill("SIGSTOP");
    },
    resumeAll: () => {
      for (const s of slots) if (isRunning(s)) s.child?.kill("SIGCONT");
    },
    destroy: async () => {
      for (const s of slots) if (isRunning(s)) s.child?.kill("SIGCONT");
      await Promise.all(slots.map((s) => stopSlot(s, "SIGKILL")));
      await rm(root, { recursive: true, force: true });
    },
  };
}

function member(slots: readonly Slot[], i: number): Slot {
  const s = slots[i];
  if (!s) throw new Error(`no etcd member ${i} (the cluster has ${slots.length})`);
  return s;
}
