import type { Logger } from "../shared/log.js";
import { httpCounterRead, startCounterReader, type CounterReader } from "./traffic-counters.js";
import { startTrafficReceiver, trafficLogPath, type TrafficReceiver, type TrafficStats } from "./traffic.js";

/** What nginx.conf renders for the traffic figures: the counters (dynamic mode), else the record file, else nothing. */
export interface TrafficPlan {
  readonly trafficCounters?: boolean;
  readonly trafficLogFile?: string;
}

/** How the controller runs nginx, known once the endpoints mode is chosen. */
export interface TrafficNginx {
  readonly endpointsMode: "dynamic" | "reload";
  readonly controlPort: number;
  readonly pushToken: string;
}

/** Where per-route traffic comes from: started once the controller knows how nginx runs, before nginx starts. */
export interface TrafficFeed {
  start(nginx: TrafficNginx): Promise<TrafficPlan>;
  close(): Promise<void>;
}

/**
 * Chooses how nginx reports traffic. Where our Lua runs (dynamic endpoints mode) nginx counts in a shared dict and
 * the controller reads the counters once a second: a few shared-dict additions per request. Without it (reload mode,
 * chosen or because nginx has no Lua module) nginx appends a record per request to a file in the state dir, which
 * costs nginx a formatted write per request; the log says so once.
 */
export function trafficFeed(stats: TrafficStats, stateDir: string, log: Logger): TrafficFeed {
  let reader: CounterReader | null = null;
  let receiver: TrafficReceiver | null = null;
  return {
    async start(nginx) {
      if (nginx.endpointsMode === "dynamic") {
        reader = startCounterReader(stats, { read: httpCounterRead(nginx.controlPort, nginx.pushToken) }, log);
        return { trafficCounters: true };
      }
      const file = trafficLogPath(stateDir);
      try {
        receiver = await startTrafficReceiver(stats, file, log);
      } catch (e) {
        // Serving traffic matters more than counting it.
        log.error(
          { file, err: (e as Error).message },
          "no per-route traffic figures: cannot open the traffic record file (check the state dir)",
        );
        return {};
      }
      log.info(
        { file },
        "traffic figures: nginx appends a record per request to a file (reload endpoints mode runs no Lua to count in nginx; dynamic mode counts at almost no cost)",
      );
      return { trafficLogFile: receiver.file };
    },
    close: async () => {
      await Promise.all([reader?.close(), receiver?.close()]);
    },
  };
}
