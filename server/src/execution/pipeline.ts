// Pipelining on one connection: statements of separate calls written at once, answered in order, each in its own implicit transaction, then reset.
import { DatabaseError, type Client, type QueryResult } from "pg";
import { GatewayError, leavesConnectionUsable, toGatewayError } from "../errors.js";
import { setPipelineMode, socketOf } from "../pool/pg-internals.js";
import { RESET_STATEMENT, type Lease } from "../pool/pool-manager.js";
import { sendTraced, type PreparedStatement } from "./execute.js";
import type { Outcome } from "./response-encoding.js";
import type { ResultAccount } from "./result-budget.js";

export type { Outcome }; // what a pipeline returns for each statement, defined with its encoding

/**
 * Sends the queries `send` makes on the leased connection in pipeline mode,
 * all in one write, and waits until every one has been answered (cancelling
 * them on PostgreSQL if the call is interrupted meanwhile: see `settle`).
 * Returns each query's outcome, in order.
 */
export async function sendPipelined<T>(
  lease: Lease,
  send: (client: Client) => Promise<T>[],
  awaitAnswers: (lease: Lease, answers: Promise<unknown>[]) => Promise<void> = settle,
): Promise<PromiseSettledResult<T>[]> {
  const outcomes = await writePipelined(
    lease,
    (client) =>
      send(client).map((answer) =>
        answer.then(
          (value): PromiseSettledResult<T> => ({ status: "fulfilled", value }),
          (reason: unknown): PromiseSettledResult<T> => ({ status: "rejected", reason }),
        ),
      ),
    awaitAnswers,
  );
  return Promise.all(outcomes);
}

/** For `sendPipelined` by a caller that cancels its statements itself (`Lease.settledByWork`): the answers awaited, nothing cancelled. */
export async function allAnswered(_lease: Lease, answers: Promise<unknown>[]): Promise<void> {
  await Promise.all(answers);
}

/**
 * The pipeline itself: the queries `send` makes (whose promises must not
 * reject) written in one write in pipeline mode, then awaited with
 * `awaitAnswers` (`settle`, unless the caller cancels them itself).
 */
async function writePipelined<T>(
  lease: Lease,
  send: (client: Client) => Promise<T>[],
  awaitAnswers: (lease: Lease, answers: Promise<unknown>[]) => Promise<void> = settle,
): Promise<Promise<T>[]> {
  const client = lease.client;
  const socket = socketOf(client);
  setPipelineMode(client, true);
  try {
    let answers: Promise<T>[];
    socket.cork();
    try {
      answers = send(client);
    } finally {
      socket.uncork();
    }
    await awaitAnswers(lease, answers);
    return answers;
  } finally {
    setPipelineMode(client, false);
  }
}

/**
 * Runs statements that belong to separate calls on one leased connection,
 * each exactly as the pool runs a call of its own: the statement in its own
 * implicit transaction (the extended protocol's Sync), then `DISCARD ALL`, so
 * no session state reaches the next one. Everything is written at once
 * (pipelined) and answered in order, so n statements cost one write and about
 * one round trip instead of 2n.
 *
 * A statement that leaves a transaction open (BEGIN) makes the reset after it
 * fail, which aborts that transaction: the statements pipelined behind it
 * then fail with 25P02 without running, so none of them can run inside it.
 * They are run again once the connection is rolled back and reset.
 *
 * Results are counted in `account` as their rows arrive (see
 * `BufferedQuery`). A lone statement cut off by its limits ends the call
 * with its error, so that the pool cancels it on PostgreSQL. One with others
 * pipelined behind it is not cancelled (a cancel that came after it ended
 * would stop the next one, another call's): its rows are read and dropped,
 * and its outcome is its error.
 *
 * The connection is left reset (`lease.markReset`) when every statement has
 * been answered, so the pool does not reset it again. With two statements or
 * more, `onStatementTime` learns the time per statement (and its reset) that
 * the pipeline took beyond one round trip: the span from the first answer to
 * the last, over the statements after the first.
 *
 * Statements of which some are COPY run one at a time (`runOneByOne`).
 */
export async function runPipelined(
  lease: Lease,
  statements: readonly PreparedStatement[],
  account: ResultAccount,
  onStatementTime?: (micros: number) => void,
): Promise<Outcome[]> {
  if (statements.some((s) => s.copy)) return runOneByOne(lease, statements, account);
  return pipeline(lease, statements, account, onStatementTime, statements.length === 1);
}

/** `runPipelined` of statements none of which is a COPY; `alone`: a single statement that is all the call has, so that a cut-off result may end it. */
async function pipeline(
  lease: Lease,
  statements: readonly PreparedStatement[],
  account: ResultAccount,
  onStatementTime: ((micros: number) => void) | undefined,
  alone: boolean,
): Promise<Outcome[]> {
  const { client } = lease;
  const onCut = alone ? (error: GatewayError) => lease.interrupt(error) : undefined;
  const outcomes: Outcome[] = new Array<Outcome>(statements.length);
  let pending = statements.map((_, i) => i);
  let firstAnswer: bigint | undefined;
  let lastAnswer = 0n;
  const answered = (at: bigint) => {
    firstAnswer ??= at;
    lastAnswer = at;
  };
  while (pending.length > 0) {
    const rerun: number[] = [];
    let resetFailed = false;
    let previousDone = process.hrtime.bigint();
    await writePipelined(lease, () => {
      const answers: Promise<void>[] = [];
      for (const i of pending) {
        answers.push(
          sendTraced(client, lease.database, statements[i]!, account, onCut).then(
            (result) => {
              const done = process.hrtime.bigint();
              answered(done);
              outcomes[i] = { result: result.encode(done - previousDone) };
            },
            (err: unknown) => {
              answered(process.hrtime.bigint());
              if (err instanceof DatabaseError && err.code === "25P02") rerun.push(i);
              else outcomes[i] = { error: toGatewayError(err) };
            },
          ),
          client.query(RESET_STATEMENT).then(
            () => {
              previousDone = process.hrtime.bigint();
            },
            () => {
              previousDone = process.hrtime.bigint();
              resetFailed = true;
            },
          ),
        );
      }
      return answers;
    });
    lease.throwIfInterrupted();
    // A lost connection: every statement has its error; the pool destroys the connection.
    if (outcomes.some((o) => o?.error !== undefined && !leavesConnectionUsable(o.error))) return fillUnanswered(outcomes, rerun);
    if (!resetFailed) break;
    // A statement left a transaction open: roll it back, reset, and run the ones behind it again.
    if (client.getTransactionStatus() !== "I") await client.query("ROLLBACK");
    await client.query(RESET_STATEMENT);
    pending = rerun.sort((a, b) => a - b);
    if (pending.length === 0) break;
  }
  lease.markReset();
  if (statements.length > 1 && firstAnswer !== undefined) onStatementTime?.(Number(lastAnswer - firstAnswer) / 1_000 / (statements.length - 1));
  return outcomes;
}

/**
 * Sends BEGIN with statements to be pipelined behind it. Until BEGIN has been
 * answered, an interruption sends PostgreSQL no cancel: a cancel that reached
 * BEGIN itself would leave the statements behind it to run, and commit, each
 * on its own. One that comes later aborts the transaction.
 */
export function shieldedBegin(lease: Lease, client: Client, begin: string): Promise<QueryResult> {
  const answered = client.query(begin);
  void lease.uninterruptible(() => answered.then(noop, noop));
  return answered;
}

function noop(): void {}

/**
 * Times pipelined answers: `lap` pairs an answer with the time since the
 * previous one was answered (the first: since the timer was made, when the
 * pipeline was sent); `failed` counts a failed answer's time and rethrows.
 */
export function lapTimer() {
  let previous = process.hrtime.bigint();
  const elapsed = () => {
    const now = process.hrtime.bigint();
    const nanos = now - previous;
    previous = now;
    return nanos;
  };
  return {
    lap: <T>(value: T): [T, bigint] => [value, elapsed()],
    failed: (err: unknown): never => {
      elapsed();
      throw err;
    },
  };
}

/**
 * `runPipelined` for statements of which some are COPY: each as a call of its
 * own, one after the other, a COPY's reset written only once it has been
 * answered. PostgreSQL reads whatever follows a COPY … FROM STDIN on the wire
 * as its data, and ends the connection at a message that is not. A result
 * cut off by its limits fails only its own statement (as in a pipeline)
 * unless it is the call's only one.
 */
async function runOneByOne(lease: Lease, statements: readonly PreparedStatement[], account: ResultAccount): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const alone = statements.length === 1;
  for (const statement of statements) {
    const [outcome] = statement.copy ? [await runCopy(lease, statement, account, alone)] : await pipeline(lease, [statement], account, undefined, alone);
    outcomes.push(outcome!);
    // A lost connection: those not sent yet get its error, as in `runPipelined`.
    if (outcome!.error !== undefined && !leavesConnectionUsable(outcome!.error)) {
      return fillUnanswered(
        outcomes,
        statements.slice(outcomes.length).map((_, j) => outcomes.length + j),
      );
    }
  }
  return outcomes;
}

/** A COPY on its own (see `CopyQuery`), then the connection's reset. */
async function runCopy(lease: Lease, statement: PreparedStatement, account: ResultAccount, alone: boolean): Promise<Outcome> {
  const started = process.hrtime.bigint();
  let outcome: Outcome;
  try {
    const result = await sendTraced(lease.client, lease.database, statement, account, alone ? (error) => lease.interrupt(error) : undefined);
    outcome = { result: result.encode(process.hrtime.bigint() - started) };
  } catch (err) {
    outcome = { error: toGatewayError(err) };
    if (!leavesConnectionUsable(outcome.error)) return outcome;
  }
  lease.throwIfInterrupted();
  await lease.client.query(RESET_STATEMENT);
  lease.markReset();
  return outcome;
}

/** Statements that were to run again when the connection was lost: their outcome is unknown, as for any statement sent. */
function fillUnanswered(outcomes: Outcome[], unanswered: readonly number[]): Outcome[] {
  for (const i of unanswered) {
    outcomes[i] = { error: new GatewayError("DATABASE_UNAVAILABLE", "the connection to the database server was lost") };
  }
  return outcomes;
}

/** How often an interrupted pipeline asks PostgreSQL again to cancel its running statement. */
export const CANCEL_AGAIN_MILLIS = 50;

/**
 * Waits for every pipelined answer. When the call is interrupted meanwhile,
 * the pool cancels the statement running then; those queued behind it would
 * still run, so the cancel is repeated until all have been answered, and
 * each is delivered before this returns, so that none can reach a later
 * call's statement (the pool destroys the connection if all that takes
 * longer than its grace period).
 */
async function settle(lease: Lease, answers: Promise<unknown>[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const cancels: Promise<boolean>[] = [];
  const stopListening = lease.onInterrupt(() => {
    timer = setInterval(() => cancels.push(lease.cancelAgain()), CANCEL_AGAIN_MILLIS);
  });
  try {
    await Promise.all(answers);
  } finally {
    clearInterval(timer);
    stopListening();
    // Every cancel delivered before the connection can serve another call.
    if (cancels.length > 0) await Promise.all(cancels);
  }
}
