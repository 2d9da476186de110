// The QueryMany call and QueryStream's queries: each run as its own Query would be, pipelined on its database's connections.
import { setMaxListeners } from "node:events";
import { beforeStatement, GatewayError, toGatewayError } from "../errors.js";
import type { TenantQuery } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { CallLimits, PoolManager } from "../pool/pool-manager.js";
import { prepareStatement, type PreparedStatement } from "./execute.js";
import { MAX_BATCH_STATEMENTS } from "./batch.js";
import { runPipelined, type Outcome } from "./pipeline.js";
import type { ResultAccount } from "./result-budget.js";
import { queryTraceContext } from "../telemetry/tracing.js";
import type { StatementCheck } from "./statement-policy.js";
import { mayWrite } from "./leading-keyword.js";

/**
 * Statements pipelined on one connection when the pool has no connection
 * free: a deeper pipeline costs fewer round trips, a shallower one waits for
 * more connections. Chosen with `npm run bench`.
 */
export const PIPELINE_DEPTH = 8;

/**
 * Free connections are not all used for fast statements: each costs a write
 * and a wake-up of its own, in the gateway and in PostgreSQL. Statements are
 * pipelined as deep as keeps a pipeline's expected time (from the database's
 * recent time per statement) within this budget, at most
 * `MAX_PIPELINE_DEPTH`; slow statements, or a database not yet measured, run
 * side by side. 16 at most: deeper was no faster (BENCHMARKS.md, pipelines
 * by time per statement), and it keeps the wait behind a statement slower
 * than expected short.
 */
export const PIPELINE_BUDGET_MICROS = 1_000;
export const MAX_PIPELINE_DEPTH = 16;

/** The depth a database's recent time per statement allows (see `PIPELINE_BUDGET_MICROS`). */
export function pipelineDepth(statementMicros: number | undefined): number {
  if (statementMicros === undefined) return 1;
  return Math.max(1, Math.min(MAX_PIPELINE_DEPTH, Math.floor(PIPELINE_BUDGET_MICROS / Math.max(statementMicros, 1))));
}

/** The weight of a new measurement in a database's mean time per statement. */
const STATEMENT_TIME_WEIGHT = 0.2;

/** Each pool's recent microseconds per statement, by the pool's identity (`PoolManager.poolKey`): forgotten with the pool. */
const statementTimes = new WeakMap<object, number>();

/**
 * Records how long statements to `database` took (`micros` each, as
 * `runPipelined` measures them): kept as an exponentially weighted mean that
 * follows a change within a few calls, for as long as the database's pool
 * lives. Nothing is recorded for a database without a pool.
 */
export function recordStatementTime(pools: PoolManager, database: string, micros: number): void {
  const key = pools.poolKey(database);
  if (key === undefined) return;
  const mean = statementTimes.get(key);
  statementTimes.set(key, mean === undefined ? micros : mean + STATEMENT_TIME_WEIGHT * (micros - mean));
}

/** The recent microseconds per statement of `database` (`recordStatementTime`), undefined when unknown. */
export function statementMicros(pools: PoolManager, database: string): number | undefined {
  const key = pools.poolKey(database);
  return key === undefined ? undefined : statementTimes.get(key);
}

/** A query ready to run: its place in the call and its statement. */
interface Runnable {
  index: number;
  statement: PreparedStatement;
}

/**
 * QueryMany: independent queries, each run as its own Query call would be.
 * A query that cannot run (invalid, or its database does not exist) gets its
 * own error and the others run. Queries to different databases run side by
 * side; those to one database are spread evenly over its connections (as
 * many as are free for slow statements, fewer for fast ones: see
 * `PIPELINE_BUDGET_MICROS`; at least ⌈n / PIPELINE_DEPTH⌉) and pipelined on
 * each (see `runPipelined`). A connection that cannot be had (pool
 * exhausted, database unavailable) fails only the queries meant for it; the
 * call's deadline or cancellation fails the whole call.
 *
 * `databaseOf` routes a tenant id to its database (the platform is checked
 * already); it is asked once per distinct tenant of the call. The results are
 * counted in `account`, each against the limits on its own, as its own Query
 * call's would be.
 */
export async function runQueryMany(
  pools: PoolManager,
  databaseOf: (tenantId: string) => Promise<string>,
  queries: readonly TenantQuery[],
  limits: StatementLimits,
  account: ResultAccount,
): Promise<{ outcomes: Outcome[]; databases: string[] }> {
  if (queries.length === 0) throw new GatewayError("INVALID_REQUEST", "QueryMany needs at least one query");
  checkQueryCount(queries.length, "QueryMany");
  const outcomes = new Array<Outcome>(queries.length);
  const databases = await runQueries(pools, databaseOf, queries, limits, account, (indexes, answers) => {
    for (const [j, index] of indexes.entries()) outcomes[index] = answers[j]!;
  });
  return { outcomes, databases };
}

/** A call's limits (deadline, cancellation) and the statements its platform may run. */
export interface StatementLimits extends CallLimits {
  check?: StatementCheck;
  /** A database's own longest statement (its quota): a call's statements on it end by then. */
  statementMillisOf?(database: string): number;
  /**
   * Admits as many of `wanted` statements to a database as its quotas allow
   * (the others fail with `refusal`); `leave` once they are over. Queries sent
   * together are admitted here, each counted; other calls by the pool, once each.
   */
  admitSome?(database: string, wanted: number): { granted: number; refusal: GatewayError | undefined; leave: () => void };
  /** Awaited before the answers of statements that may have written to a database are handed over (the result cache ends its results). */
  afterWrites?(database: string): Promise<void>;
}

/** The limits of a call's statements on one database: its deadline brought forward to the database's longest statement. */
export function limitsOn(database: string, limits: StatementLimits): StatementLimits {
  const own = limits.statementMillisOf?.(database);
  if (own === undefined) return limits;
  const deadline = Date.now() + own;
  return deadline < limits.deadline ? { ...limits, deadline } : limits;
}

/** Refuses more queries than one QueryMany call or QueryStream message carries. */
export function checkQueryCount(count: number, what: string): void {
  if (count > MAX_BATCH_STATEMENTS) throw new GatewayError("INVALID_REQUEST", `${what} takes at most ${MAX_BATCH_STATEMENTS} queries (got ${count})`);
}

/**
 * Receives the outcomes of some of the queries (by their index in the
 * request) as soon as they are known: those that could not run at once, then
 * each connection's share when its pipeline has been answered.
 */
export type Answers = (indexes: readonly number[], outcomes: readonly Outcome[]) => void;

/**
 * Runs independent queries as QueryMany does (see `runQueryMany`), handing
 * over each group of outcomes as soon as it is known. With `interruptions:
 * "throw"`, the deadline or cancellation of `limits` rejects the whole run
 * (QueryMany fails as a call); with "answer", they are the outcome of the
 * queries they stopped, as any other error. Resolves once every query has
 * been answered, with the databases the queries went to.
 */
export async function runQueries(
  pools: PoolManager,
  databaseOf: (tenantId: string) => Promise<string>,
  queries: readonly TenantQuery[],
  limits: StatementLimits,
  account: ResultAccount,
  answer: Answers,
  interruptions: "throw" | "answer" = "throw",
): Promise<string[]> {
  const routes = new Map<string, Promise<string>>();
  const byDatabase = new Map<string, Runnable[]>();
  const failed: number[] = [];
  const failures: Outcome[] = [];
  await Promise.all(
    queries.map(async (query, index) => {
      try {
        const statement = prepareStatement(query, queryTraceContext(query.traceContext), limits.check);
        let route = routes.get(query.tenantId);
        if (route === undefined) routes.set(query.tenantId, (route = databaseOf(query.tenantId)));
        const database = await route;
        let runnable = byDatabase.get(database);
        if (runnable === undefined) byDatabase.set(database, (runnable = []));
        runnable.push({ index, statement });
      } catch (err) {
        failed.push(index);
        failures.push({ error: toGatewayError(err) });
      }
    }),
  );
  if (failed.length > 0) answer(failed, failures);
  // Each connection waited for listens to the call's signal until it is had: up to one listener per
  // statement, not a leak (node warns beyond 10).
  if (limits.signal !== undefined) setMaxListeners(0, limits.signal);
  await Promise.all([...byDatabase].map(([database, runnable]) => runAdmitted(pools, database, runnable, limits, account, answer, interruptions)));
  return [...byDatabase.keys()];
}

/**
 * Over how many connections `statements` statements to one database are
 * spread, with `available` connections to be had at once and the database's
 * recent time per statement (see `PIPELINE_BUDGET_MICROS`): no more than
 * there are statements, as many as the budget's depth needs (up to those
 * available), and enough to keep pipelines at most `PIPELINE_DEPTH` deep (or
 * the budget's depth, if deeper) while waiting for connections.
 */
export function connectionsFor(statements: number, available: number, statementMicros: number | undefined): number {
  const depth = pipelineDepth(statementMicros);
  return Math.min(statements, Math.max(Math.min(available, Math.ceil(statements / depth)), Math.ceil(statements / Math.max(depth, PIPELINE_DEPTH))));
}

/**
 * Runs one database's share of the queries as far as its quotas admit them
 * (those beyond are answered with the refusal), within its own longest
 * statement. Only the call's own deadline or cancellation interrupts the
 * whole run: a database's shorter statement time is its queries' outcome.
 */
async function runAdmitted(
  pools: PoolManager,
  database: string,
  runnable: Runnable[],
  limits: StatementLimits,
  account: ResultAccount,
  answer: Answers,
  interruptions: "throw" | "answer",
): Promise<void> {
  // Queries in request order (routing may have finished out of order): those admitted come first.
  runnable.sort((a, b) => a.index - b.index);
  const admission = limits.admitSome?.(database, runnable.length);
  try {
    const admitted = admission === undefined ? runnable : runnable.slice(0, admission.granted);
    if (admission?.refusal !== undefined) {
      const refused = runnable.slice(admitted.length);
      const error = beforeStatement(admission.refusal);
      answer(
        refused.map((r) => r.index),
        refused.map(() => ({ error })),
      );
    }
    if (admitted.length === 0) return;
    const own = limitsOn(database, limits);
    // The deadline that passed is the call's unless the database's own came first.
    const callOver = (error: GatewayError) => error.reason === "CANCELLED" || (error.reason === "DEADLINE_EXCEEDED" && own.deadline >= limits.deadline);
    await runOnDatabase(
      pools,
      database,
      admitted,
      { ...own, unmetered: admission !== undefined },
      account,
      answer,
      interruptions,
      callOver,
      limits.afterWrites,
    );
  } finally {
    admission?.leave();
  }
}

/** Runs one database's share of the queries, answering each connection's share when it is done. */
async function runOnDatabase(
  pools: PoolManager,
  database: string,
  runnable: Runnable[],
  limits: CallLimits,
  account: ResultAccount,
  answer: Answers,
  interruptions: "throw" | "answer",
  callOver: (error: GatewayError) => boolean,
  afterWrites?: (database: string) => Promise<void>,
): Promise<void> {
  // Slow statements on as many connections as the pool can give at once, so that they run side by side
  // as separate Query calls would; fast ones pipelined as deep as the budget allows; and pipelines
  // (at most PIPELINE_DEPTH deep, or the budget's depth) while waiting for connections.
  const connections = connectionsFor(runnable.length, pools.available(database), statementMicros(pools, database));
  const chunks = Array.from({ length: connections }, (): Runnable[] => []);
  for (const [i, r] of runnable.entries()) chunks[i % connections]!.push(r);
  await Promise.all(
    chunks.map(async (chunk) => {
      const indexes = chunk.map((r) => r.index);
      let outcomes: Outcome[];
      try {
        const statements = chunk.map((r) => r.statement);
        outcomes = await pools.withConnection(
          database,
          (lease) => runPipelined(lease, statements, account, (micros) => recordStatementTime(pools, database, micros)),
          limits,
        );
      } catch (err) {
        const error = toGatewayError(err);
        if (interruptions === "throw" && callOver(error)) throw error;
        outcomes = chunk.map(() => ({ error }));
      }
      if (afterWrites !== undefined && chunk.some((r) => mayWrite(r.statement.sql))) await afterWrites(database);
      answer(indexes, outcomes);
    }),
  );
}
