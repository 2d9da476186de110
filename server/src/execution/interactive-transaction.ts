// The Transaction call: an interactive transaction on one leased connection, statement by statement, until commit, rollback or a limit ends it.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { toRpcStatus } from "../client-errors.js";
import { GatewayError, leavesConnectionUsable, toGatewayError } from "../errors.js";
import type { TransactionRequestSchema, TransactionResponseSchema } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { CallLimits, Lease, PoolManager } from "../pool/pool-manager.js";
import { EncodedMessage, type RequestStream, type ResponseStream } from "./call-streams.js";
import { prepareStatement, type PreparedStatement } from "./execute.js";
import { canPipeline } from "./leading-keyword.js";
import { encodeTransactionResult } from "../../../wire/src/response-encoding.js";
import type { ResultBudget } from "./result-budget.js";
import { OpenTransaction } from "./transaction-control.js";
import type { StatementCheck } from "./statement-policy.js";

/** Limits of an interactive transaction. */
export interface TransactionLimits {
  /** Longest one statement may run (the call's deadline bounds the whole transaction). */
  maxStatementMillis: number;
  /** Longest the client may leave the open transaction without a message. */
  idleTimeoutMillis: number;
  /** Where each statement's result is counted, under the limits of a call's (see `BufferedQuery`). */
  results: ResultBudget;
  /** Told of each statement that failed while the transaction went on (its error answered as a message): the call's record tallies and logs it. */
  onStatementError?: (error: GatewayError) => void;
  /** The statements the transaction's platform may run. */
  check?: StatementCheck;
  /** A database's own longest statement (its quota), when shorter than `maxStatementMillis`. */
  statementMillisOf?(database: string): number;
  /** The commit token of a transaction just committed on `lease` (see `QueryResponse.commit_token`): "" for none. */
  commitToken?(database: string, lease: Lease): Promise<string>;
  /** Awaited once a transaction committed, before it is answered (the result cache ends the database's results). */
  afterWrites?(database: string): Promise<void>;
}

type Requests = RequestStream<typeof TransactionRequestSchema>;
type Responses = ResponseStream<typeof TransactionResponseSchema>;

/**
 * Runs an interactive transaction (see `runInteractiveTransaction`) on a
 * connection of `database`'s pool, for a Transaction call or a transaction a
 * QueryStream carries; `onLease` learns its lease. Interrupted by the end of
 * the shutdown's grace period before COMMIT was sent (after, the shield makes
 * it COMMIT_OUTCOME_UNKNOWN), the transaction cannot commit, and the gateway
 * rolls it back: ROLLED_BACK_AT_SHUTDOWN.
 */
export async function runTransaction(
  pools: PoolManager,
  database: string,
  begin: string,
  requests: Requests,
  responses: Responses,
  limits: TransactionLimits,
  callLimits: CallLimits,
  onLease?: (lease: Lease) => void,
): Promise<void> {
  let begun = false;
  try {
    await pools.withConnection(
      database,
      (lease) => {
        begun = true;
        onLease?.(lease);
        const own = limits.statementMillisOf?.(database);
        const tighter = own === undefined || own >= limits.maxStatementMillis ? limits : { ...limits, maxStatementMillis: own };
        return runInteractiveTransaction(lease, begin, requests, responses, tighter, database);
      },
      callLimits,
    );
  } catch (err) {
    if (begun && err instanceof GatewayError && err.reason === "SHUTTING_DOWN") throw rolledBackAtShutdown();
    throw err;
  }
}

/** The error of a transaction the gateway rolled back as it shut down. */
export function rolledBackAtShutdown(): GatewayError {
  return new GatewayError("ROLLED_BACK_AT_SHUTDOWN", "the gateway shut down with the transaction open: it was rolled back, nothing of it committed");
}

/**
 * Runs an interactive transaction on a leased connection, after the `begin`
 * message (answered once the connection is had; BEGIN itself goes to
 * PostgreSQL with the first statement): each statement message in order on this connection,
 * each answered by its result or its error (the stream stays open, as the
 * transaction does in PostgreSQL until rollback or ROLLBACK TO SAVEPOINT).
 * `commit` and `rollback` end it. When the client half-closes without either,
 * the transaction is rolled back and `rolled_back` sent. A statement running
 * past `maxStatementMillis`, a client silent past `idleTimeoutMillis`, or a
 * result past its limits interrupts the lease: the statement is cancelled,
 * the transaction rolled back, and the call fails (DEADLINE_EXCEEDED,
 * TRANSACTION_IDLE_TIMEOUT, RESULT_TOO_LARGE, RESULT_MEMORY_EXHAUSTED).
 */
export async function runInteractiveTransaction(
  lease: Lease,
  begin: string,
  requests: Requests,
  responses: Responses,
  limits: TransactionLimits,
  database = "",
): Promise<void> {
  const transaction = OpenTransaction.deferred(lease, begin);
  await responses.send({ kind: { case: "begun", value: {} } });
  for (;;) {
    const request = await nextWithin(requests, lease, limits.idleTimeoutMillis);
    if (lease.signal.aborted) return;
    const kind = request?.kind;
    switch (kind?.case) {
      case undefined:
        if (request !== undefined) throw new GatewayError("INVALID_REQUEST", "a transaction message must be a statement, commit or rollback");
        await transaction.rollback();
        await responses.send({ kind: { case: "rolledBack", value: {} } });
        return;
      case "begin":
        throw new GatewayError("INVALID_REQUEST", "begin must be the first message of a transaction stream, and only the first");
      case "commit":
        await transaction.commit();
        await limits.afterWrites?.(database);
        await responses.send({ kind: { case: "committed", value: { commitToken: (await limits.commitToken?.(database, lease)) ?? "" } } });
        return;
      case "rollback":
        await transaction.rollback();
        await responses.send({ kind: { case: "rolledBack", value: {} } });
        return;
      case "statement": {
        const pipelined = [kind.value];
        // Statements that have already arrived behind it go in the same write, when none can end the transaction.
        for (let next = requests.peek?.(); next?.kind.case === "statement" && pipelined.length < MAX_PIPELINED; next = requests.peek?.()) {
          pipelined.push(next.kind.value);
          await requests.next();
        }
        const prepared = pipelined.length > 1 && pipelined.every((s) => canPipeline(s.sql)) ? prepareAll(pipelined, limits.check) : undefined;
        if (prepared !== undefined) {
          for (const answer of await answerPipelined(lease, transaction, prepared, limits)) await responses.send(answer);
        } else {
          for (const statement of pipelined) await responses.send(await answerStatement(lease, transaction, statement, limits));
        }
      }
    }
  }
}

/** The most statements of a transaction written at once: each write's statements share one `maxStatementMillis`. */
const MAX_PIPELINED = 16;

/**
 * Statements that arrived together, written at once (see
 * `OpenTransaction.runMany`), timed together by `maxStatementMillis`: each
 * answered by its result or its error, as `answerStatement` answers one.
 */
async function answerPipelined(
  lease: Lease,
  transaction: OpenTransaction,
  statements: readonly PreparedStatement[],
  { maxStatementMillis, results, onStatementError }: TransactionLimits,
): Promise<(MessageInitShape<typeof TransactionResponseSchema> | EncodedMessage)[]> {
  const timer = setTimeout(
    () => lease.interrupt(new GatewayError("DEADLINE_EXCEEDED", `the statements ran longer than the longest allowed (${maxStatementMillis} ms)`)),
    maxStatementMillis,
  );
  const accounts = statements.map(() => results.account());
  try {
    const answers = await transaction.runMany(statements, accounts);
    return answers.map((answer, i) => {
      if (answer.status === "fulfilled") {
        const [result, nanos] = answer.value;
        return new EncodedMessage(encodeTransactionResult(result.encode(nanos)), () => accounts[i]!.release());
      }
      accounts[i]!.release();
      const error = toGatewayError(answer.reason);
      if (lease.signal.aborted || !leavesConnectionUsable(error)) throw error;
      onStatementError?.(error);
      return { kind: { case: "error", value: toRpcStatus(error) } };
    });
  } catch (err) {
    for (const account of accounts) account.release();
    throw toGatewayError(err);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One statement of the transaction, timed by `maxStatementMillis` (the
 * result's delivery is not): its result, or its error as a message when the
 * transaction can go on (PostgreSQL's own errors); anything else throws. The
 * result holds its share of the gateway's budget until it has been written.
 */
async function answerStatement(
  lease: Lease,
  transaction: OpenTransaction,
  statement: Parameters<typeof prepareStatement>[0],
  { maxStatementMillis, results, onStatementError, check }: TransactionLimits,
): Promise<MessageInitShape<typeof TransactionResponseSchema> | EncodedMessage> {
  const timer = setTimeout(
    () => lease.interrupt(new GatewayError("DEADLINE_EXCEEDED", `the statement ran longer than the longest allowed (${maxStatementMillis} ms)`)),
    maxStatementMillis,
  );
  try {
    return await results.withAccount(async (account) => {
      const { result, nanos } = await transaction.run(prepareStatement(statement, undefined, check), account);
      await transaction.check(result.command);
      return new EncodedMessage(encodeTransactionResult(result.encode(nanos)), () => account.release());
    });
  } catch (err) {
    const error = toGatewayError(err);
    if (lease.signal.aborted || !leavesConnectionUsable(error) || error.reason === "TRANSACTION_ENDED_BY_STATEMENT" || transaction.failed) throw error;
    onStatementError?.(error);
    return { kind: { case: "error", value: toRpcStatus(error) } };
  } finally {
    clearTimeout(timer);
  }
}

/** The statements prepared, or undefined when one is invalid (each is then run, and answered, on its own). */
function prepareAll(statements: readonly Parameters<typeof prepareStatement>[0][], check: StatementCheck | undefined): PreparedStatement[] | undefined {
  try {
    return statements.map((statement) => prepareStatement(statement, undefined, check));
  } catch {
    return undefined;
  }
}

/** The next request, or undefined at half-close; interrupts the lease if none comes within `idleMillis`. */
async function nextWithin(requests: Requests, lease: Lease, idleMillis: number): ReturnType<Requests["next"]> {
  // Interrupted before its signal was first read (a QueryStream that failed as the transaction began): the signal is aborted
  // already, and its "abort" event, which will not come again, would be waited for along with a message that may never come.
  if (lease.signal.aborted) return undefined;
  const timer = setTimeout(
    () => lease.interrupt(new GatewayError("TRANSACTION_IDLE_TIMEOUT", `no message for ${idleMillis} ms inside an open transaction: it was rolled back`)),
    idleMillis,
  );
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<undefined>((resolve) => {
    onAbort = () => resolve(undefined);
    lease.signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([requests.next(), aborted]);
  } finally {
    clearTimeout(timer);
    lease.signal.removeEventListener("abort", onAbort);
  }
}
