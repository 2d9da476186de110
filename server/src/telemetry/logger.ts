import pino, { type Logger } from "pino";

export type { Logger };

/** Log levels accepted by LOG_LEVEL. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The gateway's logger: one JSON object per line (pino), with an ISO
 * timestamp, on stdout unless `destination` says otherwise. Stdout is written
 * asynchronously, so lines written while a write is under way leave together
 * (one system call per batch instead of per call); `flushLogs` empties it
 * before exit. What goes in is chosen by the callers: never a parameter
 * value, an API key, a password or a certificate.
 */
export function createLogger(level: LogLevel, destination: pino.DestinationStream = pino.destination({ dest: 1, sync: false })): Logger {
  return pino({ level, base: { service: "db-gateway" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, destination);
}

/** Writes out what the logger still holds. */
export function flushLogs(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
