import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";

/**
 * As pid 1 (a container's entrypoint), orphaned processes are re-parented to us and, once they exit, stay zombies
 * until we wait for them; Node only waits for processes it spawned. This scans /proc for zombie children and reaps
 * those that are not Node's own (libuv reaps those itself and must see their exit status).
 */

type Native = { reap(pid: number): number };

function loadNative(): Native | null {
  try {
    return createRequire(import.meta.url)("../../build/Release/reaper.node") as Native;
  } catch {
    return null;
  }
}

/** Zombie processes whose parent is `parent`. */
async function zombieChildren(parent: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (rest[0] === "Z" && Number(rest[1]) === parent) out.push(Number(name));
  }
  return out;
}

/**
 * Starts reaping when this process is pid 1; returns a stop function and whether reaping is available.
 * `ownChildren` lists pids Node spawned (never stolen from libuv); a zombie is reaped only when seen twice.
 */
export function startReaper(
  ownChildren: () => ReadonlySet<number>,
  intervalMs = 1000,
): { stop(): void; active: boolean } {
  const native = process.pid === 1 ? loadNative() : null;
  if (!native) return { stop: () => undefined, active: false };
  let seen = new Set<number>();
  const timer = setInterval(() => {
    void zombieChildren(process.pid).then((zombies) => {
      const own = ownChildren();
      const next = new Set<number>();
      for (const pid of zombies) {
        if (own.has(pid)) continue;
        if (seen.has(pid)) native.reap(pid);
        else next.add(pid);
      }
      seen = next;
    });
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer), active: true };
}
