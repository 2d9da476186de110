// A gateway logger whose lines the test keeps, to check what the gateway logged.
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../server/src/telemetry/logger.js";

/** A logger at `level` whose JSON lines are kept in `lines`, in order. */
export function keptLog(level: Parameters<typeof createLogger>[0]): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  return { logger: createLogger(level, sink), lines };
}
