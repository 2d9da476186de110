// The Batch call: statements on one connection, atomic or each committing on its own, pipelined when none can end a transaction.
import { DatabaseError } from "pg";
import { atStatement, GatewayError, leavesConnectionUsable, toGatewayError } from "../errors.js";
import type { TransactionOptions } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Statement } from "../../../wire/src/gen/dbgateway/v1/values_pb.js";
import { RESET_STATEMENT, type Lease } from "../pool/pool-manager.js";
import { prepareStatement, runStatement, sendTraced, type PreparedStatement } from "./execute.js";
import { activeQueryOf } from "../pool/pg-internals.js";
import { canPipeline, returnsNoRows } from "./leading-keyword.js";
import { allAnswered, CANCEL_AGAIN_MILLIS, lapTimer, sendPipelined, shieldedBegin, type Outcome } from "./pipeline.js";
import type { BufferedResult } from "./buffered-query.js";
import type { ResultAccount } from "./result-budget.js";
import { beginStatement, commit, commitOutcomeUnknown, OpenTransaction } from "./transaction-control.js";
import type { StatementCheck } from "./statement-policy.js";

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
export function prepareBatch(
  statements: readonly Statement[],
  atomic: boolean,
  options: TransactionOptions | undefined,
  check?: StatementCheck,
): PreparedBatch {
  if (statements.length === 0) throw new GatewayError("INVALID_REQUEST", "a batch needs at least one statement");
  if (statements.length > MAX_BATCH_STATEMENTS) {
    throw new GatewayError("INVALID_REQUEST", `a batch holds at most ${MAX_BATCH_STATEMENTS} statements (got ${statements.length})`);
  }
  const prepared = statements.map((statement, i) => {
    try {
      return prepareStatement(statement, undefined, check);
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
    if (!batch.atomic) return runIndependentPipelined(lease, batch, account, cut);
    return batch.statements.every((s) => returnsNoRows(s.sql)) ? runAtomicInOneTrip(lease, batch, account) : runAtomicPipelined(lease, batch, account, cut);
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
 * An atomic batch of writes that return no rows (`returnsNoRows`) in one
 * round trip: BEGIN, the statements, COMMIT and the connection's reset
 * written at once. A statement that fails aborts the transaction: those
 * behind it fail with 25P02 without running, and COMMIT rolls it back, so
 * nothing commits unless every statement succeeded (BEGIN is shielded from
 * cancels, as in `runAtomicPipelined`). No row can cut a result off, so only
 * the call's deadline, its cancellation or a drain interrupts it: the
 * statement running then is cancelled (repeatedly, until every statement has
 * been answered; COMMIT is not cancelled on purpose), and the call ends with
 * what PostgreSQL did: the interruption's error if the transaction rolled
 * back, the results if it had committed by then.
 */
async function runAtomicInOneTrip(lease: Lease, batch: PreparedBatch, account: ResultAccount): Promise<Outcome[]> {
  lease.throwIfInterrupted();
  const timed = lapTimer();
  return lease.settledByWork(async () => {
    const answers = await sendPipelined<unknown>(
      lease,
      (client) => {
        const begun = shieldedBegin(lease, client, batch.begin);
        const statements = batch.statements.map((statement) => sendTraced(client, lease.database, statement, account).then(timed.lap));
        cancelUntilAnswered(lease, batch, begun, statements);
        return [begun, ...statements, client.query("COMMIT"), client.query(RESET_STATEMENT)];
      },
      allAnswered,
    );
    const reset = answers.pop()!;
    const committed = answers.pop()!;
    const [begun, ...ran] = answers;
    if (reset.status === "fulfilled" && lease.client.getTransactionStatus() === "I") lease.markReset();
    if (begun!.status === "rejected") {
      // Not seen with a live connection (BEGIN is the gateway's own text, shielded from cancels); the statements would have run on their own.
      throw new GatewayError("COMMIT_OUTCOME_UNKNOWN", "BEGIN failed: the statements may have committed each on its own", { cause: begun!.reason });
    }
    if (committed.status === "fulfilled" && (committed.value as { command: string }).command === "COMMIT") {
      return ran.map((answer): Outcome => {
        // pg could not send it (not seen: parameters are text or bytes, converted beforehand): it did not run, the others committed.
        if (answer.status === "rejected") return { error: toGatewayError(answer.reason) };
        const [result, nanos] = answer.value as [BufferedResult, bigint];
        return { result: result.encode(nanos) };
      });
    }
    // Rolled back, or its outcome unknown: the first error says why.
    const failed = ran.findIndex((answer) => answer.status === "rejected");
    const rolledBack =
      committed.status === "fulfilled" || isDatabaseError(committed.reason) || (failed >= 0 && isDatabaseError((ran[failed] as PromiseRejectedResult).reason));
    if (!rolledBack) throw commitOutcomeUnknown();
    lease.throwIfInterrupted();
    if (failed >= 0) throw atStatement(toGatewayError((ran[failed] as PromiseRejectedResult).reason), failed);
    if (committed.status === "rejected") throw toGatewayError(committed.reason);
    throw new GatewayError("TRANSACTION_ABORTED", "the transaction was rolled back at COMMIT");
  }, commitOutcomeUnknown);
}

/**
 * Once the call is interrupted: asks PostgreSQL to cancel the running
 * statement, and again every `CANCEL_AGAIN_MILLIS` until every statement has
 * been answered, each time only while the connection waits for the answer to
 * one of the batch's statements: never to BEGIN (a cancel that reached BEGIN
 * would leave the statements to commit each on its own), nor to COMMIT or the
 * reset. PostgreSQL may be ahead of the answers read, so a cancel can still
 * reach COMMIT, which then rolls back: the answer says so. The pool reuses the
 * connection only once every cancel has been delivered (`Lease.cancelAgain`).
 */
function cancelUntilAnswered(lease: Lease, batch: PreparedBatch, begun: Promise<unknown>, statements: readonly Promise<unknown>[]): void {
  const notStatements = new Set([batch.begin, "COMMIT", RESET_STATEMENT]);
  const runsStatement = () => {
    const active = activeQueryOf(lease.client) as { text?: string } | undefined;
    return active !== undefined && !notStatements.has(active.text ?? "");
  };
  let answered = false;
  let timer: NodeJS.Timeout | undefined;
  const cancel = () => {
    if (!answered && runsStatement()) void lease.cancelAgain();
  };
  const stopListening = lease.onInterrupt(() => {
    cancel();
    void begun.then(cancel, cancel);
    timer = setInterval(cancel, CANCEL_AGAIN_MILLIS);
  });
  void Promise.allSettled(statements).then(() => {
    answered = true;
    clearInterval(timer);
    stopListening();
  });
}

function isDatabaseError(err: unknown): boolean {
  return err instanceof DatabaseError && err.severity === "ERROR";
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
