import { isatty } from "node:tty";
import pino, { type Logger } from "pino";
import pretty from "pino-pretty";
import { humanLine } from "./log-line.js";

export type { Logger };

/**
 * The one logger: JSON lines (pino) for whatever reads them, or one human-readable line per record when it writes to
 * a terminal (an apply says what changed and how long it took; see humanLine).
 */
export function createLogger(options: { level?: string; pretty?: boolean; destination?: number } = {}): Logger {
  const level = options.level ?? process.env["NGINX_LB_LOG_LEVEL"] ?? "info";
  const destination = options.destination ?? 2;
  if (options.pretty ?? isatty(destination))
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
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(destination));
}
