import { GatewayError, toGatewayError } from "../errors.js";
import type { Statement } from "../gen/dbgateway/v1/values_pb.js";
import type { CallLimits, PoolManager } from "../pool/pool-manager.js";
import { prepareStatement, type PreparedStatement } from "./execute.js";
import { MAX_BATCH_STATEMENTS } from "./batch.js";
import { runPipelined, type Outcome } from "./pipeline.js";

/**
 * Statements pipelined on one connection when the pool has no connection
 * free: a deeper pipeline costs fewer round trips, a shallower one waits for
 * more connections. Chosen with `npm run bench`.
 */
export const PIPELINE_DEPTH = 8;

/**
 * QueryMany: independent queries, each run as its own Query call would be.
 * A statement that cannot run (invalid) gets its own error and the others
 * run. The rest are spread evenly over as many of the database's connections
 * as are free (at least ⌈n / PIPELINE_DEPTH⌉) and pipelined on each (see
 * `runPipelined`). A connection that
 * cannot be had (pool exhausted, database unavailable) fails only the
 * statements meant for it; the call's deadline or cancellation fails the
 * whole call.
 */
export async function runQueryMany(pools: PoolManager, database: string, statements: readonly Statement[], limits: CallLimits): Promise<Outcome[]> {
  if (statements.length === 0) throw new GatewayError("INVALID_REQUEST", "QueryMany needs at least one statement");
  if (statements.length > MAX_BATCH_STATEMENTS) {
    throw new GatewayError("INVALID_REQUEST", `QueryMany takes at most ${MAX_BATCH_STATEMENTS} statements (got ${statements.length})`);
  }
  const outcomes = new Array<Outcome>(statements.length);
  const runnable: { index: number; statement: PreparedStatement }[] = [];
  for (const [index, statement] of statements.entries()) {
    try {
      runnable.push({ index, statement: prepareStatement(statement) });
    } catch (err) {
      outcomes[index] = { error: toGatewayError(err) };
    }
  }
  // As many connections as the pool can give at once, so that slow statements run side by side as
  // separate Query calls would; pipelines (at most PIPELINE_DEPTH deep while waiting) once it cannot.
  const connections = Math.min(runnable.length, Math.max(pools.available(database), Math.ceil(runnable.length / PIPELINE_DEPTH)));
  const chunks = Array.from({ length: connections }, (): typeof runnable => []);
  for (const [i, r] of runnable.entries()) chunks[i % connections]!.push(r);
  await Promise.all(
    chunks.map(async (chunk) => {
      try {
        const results = await pools.withConnection(database, (lease) => runPipelined(lease, chunk.map((r) => r.statement)), limits);
        for (const [j, r] of chunk.entries()) outcomes[r.index] = results[j]!;
      } catch (err) {
        const error = toGatewayError(err);
        if (error.reason === "DEADLINE_EXCEEDED" || error.reason === "CANCELLED") throw error;
        for (const r of chunk) outcomes[r.index] = { error };
      }
    }),
  );
  return outcomes;
}
