import pino, { type Logger } from "pino";

export type { Logger };

/** The one logger: JSON lines (pino), or human-readable lines when stderr is a terminal. */
export function createLogger(options: { level?: string; pretty?: boolean; destination?: number } = {}): Logger {
  const level = options.level ?? process.env["NGINX_LB_LOG_LEVEL"] ?? "info";
  const pretty = options.pretty ?? Boolean(process.stderr.isTTY);
  if (pretty)
    return pino({
      level,
      transport: {
        target: "pino-pretty",
        options: { destination: options.destination ?? 2, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" },
      },
    });
  return pino(
    { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination(options.destination ?? 2),
  );
}
