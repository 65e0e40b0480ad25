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
