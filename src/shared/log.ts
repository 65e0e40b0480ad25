import { createRequire } from "node:module";
import { isatty } from "node:tty";
import pino, { type Logger } from "pino";
import { humanLine } from "./log-line.js";

export type { Logger };

/**
 * The one logger: JSON lines (pino) for whatever reads them, or one human-readable line per record when it writes to
 * a terminal (an apply says what changed and how long it took; see humanLine).
 */
export function createLogger(options: { level?: string; pretty?: boolean; destination?: number } = {}): Logger {
  const level = options.level ?? process.env["NGINX_LB_LOG_LEVEL"] ?? "info";
  const destination = options.destination ?? 2;
  if (options.pretty ?? isatty(destination)) {
    // Loaded only for a terminal (a daemon's log goes to a file or journald as JSON): it is a tenth of the CLI's load.
    const pretty = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
    return pino(
      // No pid and hostname on every line: one process on one machine; a record naming a pid still shows it.
      { level, base: undefined },
      // In this thread, not a transport worker: messageFormat is a function, and a line written synchronously is on
      // the terminal before the process exits (the last "stopped" line included).
      pretty({
        destination,
        sync: true,
        colorize: process.env["NO_COLOR"] === undefined,
        translateTime: "SYS:HH:MM:ss.l",
        ignore: "pid,hostname",
        hideObject: true,
        messageFormat: (log, messageKey, _level, { colors }) => humanLine(log, messageKey, colors),
      }),
    );
  }
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(destination));
}
