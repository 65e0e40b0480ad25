import type { ChildProcess } from "node:child_process";

const live = new Set<number>();

/** Records a process Node spawned until it exits, so the pid-1 reaper never takes its exit status from libuv. */
export function trackChild<T extends ChildProcess>(child: T): T {
  const pid = child.pid;
  if (pid !== undefined) {
    live.add(pid);
    child.once("exit", () => live.delete(pid));
  }
  return child;
}

/** Pids of processes Node spawned that have not been reaped yet. */
export function ownChildren(): ReadonlySet<number> {
  return live;
}

/** The only variables a child (nginx, `nginx -t`) inherits: where programs are, and the time zone of its logs. */
const CHILD_ENV_KEEP = ["PATH", "TZ"] as const;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * A scrubbed environment for the processes we spawn. nginx workers run as another user and keep the environment
 * they were started with (readable in /proc/<pid>/environ), so the controller's own (etcd password, admin token,
 * every NGINX_LB_* setting) never reaches them.
 */
export function childEnv(from: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const env: Record<string, string> = { PATH: DEFAULT_PATH };
  for (const name of CHILD_ENV_KEEP) {
    const value = from[name];
    if (value !== undefined && value !== "") env[name] = value;
  }
  return env;
}
