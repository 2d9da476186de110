// The Batch call: statements on one connection, atomic or each committing on its own, pipelined when none can end a transaction.
import { atStatement, GatewayError, leavesConnectionUsable, toGatewayError } from "../errors.js";
import type { TransactionOptions } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Statement } from "../../../wire/src/gen/dbgateway/v1/values_pb.js";
import { RESET_STATEMENT, type Lease } from "../pool/pool-manager.js";
import { prepareStatement, runStatement, sendTraced, type PreparedStatement } from "./execute.js";
import { canPipeline } from "./leading-keyword.js";
import { lapTimer, sendPipelined, shieldedBegin, type Outcome } from "./pipeline.js";
import type { BufferedResult } from "./buffered-query.js";
import type { ResultAccount } from "./result-budget.js";
import { beginStatement, commit, OpenTransaction } from "./transaction-control.js";

/** What a batch does when the statement at index `i` cuts its results off (see `runBatch`). */
type CutAt = (i: number) => (error: GatewayError) => void;

/** The most statements one batch may hold. */
export const MAX_BATCH_STATEMENTS = 1_000;

/** A batch checked before any connection is taken: statements and options are valid. */
export interface PreparedBatch {
  readonly statements: readonly PreparedStatement[];
  readonly atomic: boolean;
  /** Atomic batches only. */
  readonly begin: string;
}

/** Checks every statement of a batch; an invalid one fails the call, naming its index. */
export function prepareBatch(statements: readonly Statement[], atomic: boolean, options: TransactionOptions | undefined): PreparedBatch {
  if (statements.length === 0) throw new GatewayError("INVALID_REQUEST", "a batch needs at least one statement");
  if (statements.length > MAX_BATCH_STATEMENTS) {
    throw new GatewayError("INVALID_REQUEST", `a batch holds at most ${MAX_BATCH_STATEMENTS} statements (got ${statements.length})`);
  }
  const prepared = statements.map((statement, i) => {
    try {
      return prepareStatement(statement);
    } catch (err) {
      throw atStatement(toGatewayError(err), i);
    }
  });
  return { statements: prepared, atomic, begin: atomic ? beginStatement(options) : "" };
}

/**
 * Runs a batch on one connection. Atomic: BEGIN, every statement, COMMIT; the
 * first error fails the call with that statement's index and nothing commits.
 * Independent: each statement commits on its own and reports its own result
 * or error; only a broken connection fails the whole call (naming the
 * statement whose outcome is unknown).
 *
 * When every statement is one that can neither end nor open a transaction
 * (`canPipeline`: SELECT, INSERT, UPDATE, DELETE, MERGE, WITH …), they are
 * pipelined: written at once and answered in order, one round trip to
 * PostgreSQL instead of one per statement (an atomic batch's BEGIN goes
 * with them, its COMMIT follows once all have succeeded). Otherwise the
 * statements run one at a time, each checked before the next is sent.
 *
 * The results are counted in `account`, whose limits apply to them together
 * (they travel in one response): a statement that takes them past a limit
 * ends the call with its error, naming its index, as a deadline would.
 */
export async function runBatch(lease: Lease, batch: PreparedBatch, account: ResultAccount): Promise<Outcome[]> {
  const cut = (i: number) => (error: GatewayError) => lease.interrupt(atStatement(error, i));
  if (batch.statements.every((s) => canPipeline(s.sql))) {
    return batch.atomic ? runAtomicPipelined(lease, batch, account, cut) : runIndependentPipelined(lease, batch, account, cut);
  }
  const { client } = lease;
  const results: Outcome[] = [];
  if (batch.atomic) {
    const transaction = await OpenTransaction.begin(lease, batch.begin);
    for (const [i, statement] of batch.statements.entries()) {
      try {
        const { result, nanos } = await runStatement(lease, statement, account, cut(i));
        await transaction.check(result.command);
        results.push({ result: result.encode(nanos) });
      } catch (err) {
        throw atStatement(toGatewayError(err), i);
      }
      if (lease.signal.aborted) return results;
    }
    await commit(lease);
    return results;
  }
  for (const [i, statement] of batch.statements.entries()) {
    try {
      const { result, nanos } = await runStatement(lease, statement, account, cut(i));
      results.push({ result: result.encode(nanos) });
      if (client.getTransactionStatus() !== "I") {
        await client.query("ROLLBACK");
        throw new GatewayError(
          "TRANSACTION_ENDED_BY_STATEMENT",
          "a statement of an independent batch opened a transaction (rolled back): use an atomic batch instead",
        );
      }
    } catch (err) {
      const error = atStatement(toGatewayError(err), i);
      if (!leavesConnectionUsable(error)) throw error;
      results[i] = { error };
    }
    if (lease.signal.aborted) return results;
  }
  return results;
}

/**
 * An atomic batch in two round trips: BEGIN and every statement pipelined,
 * then, if all succeeded and the call still runs, COMMIT with the
 * connection's reset behind it. BEGIN's text is the gateway's own and cannot
 * fail on a connection that is alive, so no statement runs outside the
 * transaction; one that fails aborts it, and those behind it fail with
 * 25P02 without running. COMMIT is sent only after the answers, so an
 * interrupted call never commits, and a cancel can never reach COMMIT.
 */
async function runAtomicPipelined(lease: Lease, batch: PreparedBatch, account: ResultAccount, cut: CutAt): Promise<Outcome[]> {
  const timed = lapTimer();
  if (lease.signal.aborted) throw lease.signal.reason;
  const [begun, ...answers] = await sendPipelined<unknown>(lease, (client) => [
    shieldedBegin(lease, client, batch.begin).then(timed.lap),
    ...batch.statements.map((statement, i) => sendTraced(client, lease.database, statement, account, cut(i)).then(timed.lap)),
  ]);
  if (lease.signal.aborted) throw lease.signal.reason;
  if (begun!.status === "rejected") throw toGatewayError(begun!.reason);
  const results: Outcome[] = [];
  for (const [i, answer] of answers.entries()) {
    if (answer.status === "rejected") throw atStatement(toGatewayError(answer.reason), i);
    const [result, nanos] = answer.value as [BufferedResult, bigint];
    results.push({ result: result.encode(nanos) });
  }
  // None of these statements can end the transaction; checked all the same, as cheap as it is.
  if (lease.client.getTransactionStatus() !== "T") throw new GatewayError("TRANSACTION_ENDED_BY_STATEMENT", "a statement ended the transaction");
  await commit(lease);
  return results;
}

/**
 * Statements of an independent batch written at once. Each commits on its
 * own, so those already sent run even when the call is interrupted (a cancel
 * stops only the one running when it arrives): writing a long batch in parts
 * bounds what runs after an interruption, as QueryMany's pipelines are.
 */
export const INDEPENDENT_PIPELINE_DEPTH = 16;

/**
 * An independent batch in one round trip per `INDEPENDENT_PIPELINE_DEPTH`
 * statements: each statement pipelined in its own implicit transaction (its
 * own Sync), the connection's reset behind the last.
 */
async function runIndependentPipelined(lease: Lease, batch: PreparedBatch, account: ResultAccount, cut: CutAt): Promise<Outcome[]> {
  const results: Outcome[] = [];
  const { statements } = batch;
  for (let from = 0; from < statements.length; from += INDEPENDENT_PIPELINE_DEPTH) {
    if (lease.signal.aborted) throw lease.signal.reason;
    const part = statements.slice(from, from + INDEPENDENT_PIPELINE_DEPTH);
    const last = from + part.length === statements.length;
    const timed = lapTimer();
    const answers = await sendPipelined<unknown>(lease, (client) => [
      ...part.map((statement, i) => sendTraced(client, lease.database, statement, account, cut(from + i)).then(timed.lap, timed.failed)),
      ...(last ? [client.query(RESET_STATEMENT).then(timed.lap)] : []),
    ]);
    if (lease.signal.aborted) throw lease.signal.reason;
    const reset = last ? answers.pop()! : undefined;
    for (const [i, answer] of answers.entries()) {
      if (answer.status === "fulfilled") {
        const [result, nanos] = answer.value as [BufferedResult, bigint];
        results.push({ result: result.encode(nanos) });
        continue;
      }
      const error = atStatement(toGatewayError(answer.reason), from + i);
      if (!leavesConnectionUsable(error)) throw error;
      results.push({ error });
    }
    if (reset?.status === "fulfilled" && lease.client.getTransactionStatus() === "I") lease.markReset();
  }
  return results;
}
