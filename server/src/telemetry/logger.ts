import pino, { type Logger } from "pino";

export type { Logger };

/** Log levels accepted by LOG_LEVEL. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The gateway's logger: one JSON object per line on stdout (pino), with an
 * ISO timestamp. What goes in is chosen by the callers: never a parameter
 * value, an API key, a password or a certificate.
 */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { service: "db-gateway" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, destination);
}
