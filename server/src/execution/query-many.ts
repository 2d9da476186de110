import { GatewayError, toGatewayError } from "../errors.js";
import type { TenantQuery } from "../gen/dbgateway/v1/query_service_pb.js";
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

/** A query ready to run: its place in the call and its statement. */
interface Runnable {
  index: number;
  statement: PreparedStatement;
}

/**
 * QueryMany: independent queries, each run as its own Query call would be.
 * A query that cannot run (invalid, or its database does not exist) gets its
 * own error and the others run. Queries to different databases run side by
 * side; those to one database are spread evenly over as many of its
 * connections as are free (at least ⌈n / PIPELINE_DEPTH⌉) and pipelined on
 * each (see `runPipelined`). A connection that cannot be had (pool
 * exhausted, database unavailable) fails only the queries meant for it; the
 * call's deadline or cancellation fails the whole call.
 *
 * `databaseOf` routes a tenant id to its database (the platform is checked
 * already); it is asked once per distinct tenant of the call.
 */
export async function runQueryMany(
  pools: PoolManager,
  databaseOf: (tenantId: string) => Promise<string>,
  queries: readonly TenantQuery[],
  limits: CallLimits,
): Promise<{ outcomes: Outcome[]; databases: string[] }> {
  if (queries.length === 0) throw new GatewayError("INVALID_REQUEST", "QueryMany needs at least one query");
  if (queries.length > MAX_BATCH_STATEMENTS) {
    throw new GatewayError("INVALID_REQUEST", `QueryMany takes at most ${MAX_BATCH_STATEMENTS} queries (got ${queries.length})`);
  }
  const outcomes = new Array<Outcome>(queries.length);
  const routes = new Map<string, Promise<string>>();
  const byDatabase = new Map<string, Runnable[]>();
  await Promise.all(
    queries.map(async (query, index) => {
      try {
        const statement = prepareStatement(query);
        let route = routes.get(query.tenantId);
        if (route === undefined) routes.set(query.tenantId, (route = databaseOf(query.tenantId)));
        const database = await route;
        let runnable = byDatabase.get(database);
        if (runnable === undefined) byDatabase.set(database, (runnable = []));
        runnable.push({ index, statement });
      } catch (err) {
        outcomes[index] = { error: toGatewayError(err) };
      }
    }),
  );
  await Promise.all([...byDatabase].map(([database, runnable]) => runOnDatabase(pools, database, runnable, limits, outcomes)));
  return { outcomes, databases: [...byDatabase.keys()] };
}

/** Runs one database's share of a QueryMany call, its outcomes written into `outcomes`. */
async function runOnDatabase(pools: PoolManager, database: string, runnable: Runnable[], limits: CallLimits, outcomes: Outcome[]): Promise<void> {
  // Queries in request order (routing may have finished out of order).
  runnable.sort((a, b) => a.index - b.index);
  // As many connections as the pool can give at once, so that slow statements run side by side as
  // separate Query calls would; pipelines (at most PIPELINE_DEPTH deep while waiting) once it cannot.
  const connections = Math.min(runnable.length, Math.max(pools.available(database), Math.ceil(runnable.length / PIPELINE_DEPTH)));
  const chunks = Array.from({ length: connections }, (): Runnable[] => []);
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
}
