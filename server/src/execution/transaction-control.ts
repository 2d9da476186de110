// Transactions the gateway opens (Batch, Transaction): BEGIN from their options, statements that end them caught, COMMIT's outcome never guessed.
import pg from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import { IsolationLevel, type TransactionOptions } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { RESET_STATEMENT, type Lease } from "../pool/pool-manager.js";
import { runStatement, sendTraced, type PreparedStatement } from "./execute.js";
import { isQueryable } from "../pool/pg-internals.js";
import { lapTimer, sendPipelined, shieldedBegin } from "./pipeline.js";
import type { BufferedResult } from "./buffered-query.js";
import type { ResultAccount } from "./result-budget.js";

const ISOLATION: ReadonlyMap<IsolationLevel, string> = new Map([
  [IsolationLevel.UNSPECIFIED, ""],
  [IsolationLevel.READ_COMMITTED, " ISOLATION LEVEL READ COMMITTED"],
  [IsolationLevel.REPEATABLE_READ, " ISOLATION LEVEL REPEATABLE READ"],
  [IsolationLevel.SERIALIZABLE, " ISOLATION LEVEL SERIALIZABLE"],
]);

/**
 * The BEGIN statement for a transaction's options. Its text is chosen from
 * fixed strings by the enum's value; an unknown value is INVALID_ARGUMENT.
 */
export function beginStatement(options: TransactionOptions | undefined): string {
  const isolation = ISOLATION.get(options?.isolationLevel ?? IsolationLevel.UNSPECIFIED);
  if (isolation === undefined) throw new GatewayError("INVALID_REQUEST", `unknown isolation level ${options?.isolationLevel}`);
  return `BEGIN${isolation}${options?.readOnly ? " READ ONLY" : ""}${options?.deferrable ? " DEFERRABLE" : ""}`;
}

/**
 * A transaction the gateway opened on a leased connection, for a Batch or a
 * Transaction stream: begun, checked after each of the caller's statements,
 * and ended by commit or rollback.
 */
export class OpenTransaction {
  /** BEGIN, when it has not been sent yet (see `deferred`). */
  #begin: string | undefined;
  /** Set when a deferred BEGIN failed: the transaction never began, and the call must end. */
  #failed = false;

  private constructor(
    private readonly lease: Lease,
    /** transaction_timestamp() at BEGIN: a transaction chained by COMMIT/ROLLBACK AND CHAIN has another. */
    private startedAt: string,
  ) {}

  /** Runs BEGIN, and reads the transaction's start time in the same round trip. */
  static async begin(lease: Lease, begin: string): Promise<OpenTransaction> {
    try {
      return new OpenTransaction(lease, startedAt(await lease.client.query(beginAndStart(begin))));
    } catch (err) {
      throw toGatewayError(err);
    }
  }

  /**
   * A transaction whose BEGIN is sent with its first statement, in the same
   * write (see `run`): one round trip to PostgreSQL less. A transaction that
   * runs no statement never begins: its commit and rollback have nothing to
   * do. BEGIN's text is the gateway's own, so it fails only on a broken
   * connection or (SERIALIZABLE) on a standby, where no statement can write.
   */
  static deferred(lease: Lease, begin: string): OpenTransaction {
    const transaction = new OpenTransaction(lease, "");
    transaction.#begin = begin;
    return transaction;
  }

  /** Whether a deferred BEGIN failed: the call must end rather than answer the error and go on. */
  get failed(): boolean {
    return this.#failed;
  }

  /**
   * Runs one of the caller's statements in the transaction (the first
   * pipelined behind a deferred BEGIN), its result counted in `account`; a
   * result cut off by its limits ends the call with its error (the
   * transaction is rolled back).
   */
  async run(statement: PreparedStatement, account: ResultAccount): Promise<{ result: BufferedResult; nanos: bigint }> {
    const begin = this.#begin;
    if (begin === undefined) return runStatement(this.lease, statement, account, (error) => this.lease.interrupt(error));
    this.#begin = undefined;
    if (this.lease.signal.aborted) throw this.lease.signal.reason;
    const timed = lapTimer(); // the statement's time counts from sending, BEGIN included
    const [begun, answer] = await sendPipelined<unknown>(this.lease, (client) => [
      shieldedBegin(this.lease, client, beginAndStart(begin)),
      sendTraced(client, this.lease.database, statement, account, (error) => this.lease.interrupt(error)).then(timed.lap),
    ]);
    if (begun!.status === "rejected") {
      this.#failed = true;
      throw toGatewayError(begun!.reason);
    }
    this.startedAt = startedAt(begun!.value);
    if (answer!.status === "rejected") throw toGatewayError(answer!.reason);
    const [result, nanos] = answer!.value as [BufferedResult, bigint];
    return { result, nanos };
  }

  /**
   * Runs several of the caller's statements written at once (the first
   * behind a deferred BEGIN), each result counted in its own account, and
   * settles each as if they had been sent one by one: one that fails aborts
   * the transaction, and those behind it fail with 25P02 without running.
   * Only for statements that can neither end nor open a transaction
   * (`canPipeline`). A result cut off by its limits ends the call.
   */
  async runMany(statements: readonly PreparedStatement[], accounts: readonly ResultAccount[]): Promise<PromiseSettledResult<[BufferedResult, bigint]>[]> {
    const begin = this.#begin;
    this.#begin = undefined;
    if (this.lease.signal.aborted) throw this.lease.signal.reason;
    const timed = lapTimer(); // each statement's time counts from the answer before it (the first's: from sending, BEGIN included)
    const cut = (error: GatewayError) => this.lease.interrupt(error);
    const answers = await sendPipelined<unknown>(this.lease, (client) => [
      ...(begin === undefined ? [] : [shieldedBegin(this.lease, client, beginAndStart(begin))]),
      ...statements.map((statement, i) => sendTraced(client, this.lease.database, statement, accounts[i]!, cut).then(timed.lap, timed.failed)),
    ]);
    if (begin !== undefined) {
      const begun = answers.shift()!;
      if (begun.status === "rejected") {
        this.#failed = true;
        throw toGatewayError(begun.reason);
      }
      this.startedAt = startedAt(begun.value);
    }
    return answers as PromiseSettledResult<[BufferedResult, bigint]>[];
  }

  /**
   * Fails with TRANSACTION_ENDED_BY_STATEMENT when the caller's statement
   * (whose command tag is `command`) ended this transaction: COMMIT, ROLLBACK,
   * PREPARE TRANSACTION, or one of them AND CHAIN, which opens a new one. Its
   * later statements would otherwise run outside the transaction asked for.
   * `ROLLBACK TO SAVEPOINT`, whose tag is also ROLLBACK, keeps it.
   */
  async check(command: string): Promise<void> {
    const client = this.lease.client;
    let ended = client.getTransactionStatus() === "I" || command === "COMMIT";
    if (!ended && command === "ROLLBACK") {
      const { rows } = await client.query<{ started: string }>("SELECT transaction_timestamp()::text AS started");
      ended = rows[0]?.started !== this.startedAt;
    }
    if (ended) {
      throw new GatewayError(
        "TRANSACTION_ENDED_BY_STATEMENT",
        "a statement ended the transaction: control the transaction with the call's own commit and rollback, not with SQL",
      );
    }
  }

  /** Commits: see `commit`. A transaction that never began has nothing to commit. */
  commit(): Promise<void> {
    if (this.#begin === undefined) return commit(this.lease);
    this.lease.markReset(); // nothing ran since the connection's last reset
    return Promise.resolve();
  }

  async rollback(): Promise<void> {
    if (this.#begin !== undefined) {
      this.lease.markReset(); // nothing ran since the connection's last reset
      return;
    }
    try {
      await this.lease.client.query("ROLLBACK");
    } catch (err) {
      throw toGatewayError(err);
    }
  }
}

/**
 * Commits the lease's open transaction, with the connection's reset
 * (`DISCARD ALL`) pipelined behind COMMIT, so the pool need not reset it in
 * a round trip of its own. A statement ERROR means PostgreSQL rolled back (a
 * serialization failure at commit, a deferred constraint): that error. A
 * COMMIT answered with ROLLBACK means the transaction had failed before:
 * TRANSACTION_ABORTED. A connection lost before COMMIT could be sent
 * rolled back: DATABASE_UNAVAILABLE. Anything else after COMMIT was sent (a broken
 * connection, a FATAL error, the call interrupted) leaves the outcome
 * unknown: COMMIT_OUTCOME_UNKNOWN, never an answer that claims either
 * outcome. An interruption sends no cancel: a COMMIT on its way is left to
 * finish.
 */
export async function commit(lease: Lease): Promise<void> {
  if (!isQueryable(lease.client)) {
    // The connection was lost before COMMIT could be sent: PostgreSQL rolled the transaction back as its session ended.
    throw new GatewayError(
      "DATABASE_UNAVAILABLE",
      "the connection to PostgreSQL was lost before COMMIT: the transaction was rolled back, nothing of it committed",
    );
  }
  const unknown = commitOutcomeUnknown;
  const answers = lease.uninterruptible(
    () => sendPipelined(lease, (client) => [client.query("COMMIT"), client.query(RESET_STATEMENT)]),
    () => unknown(),
  );
  let committed: PromiseSettledResult<pg.QueryResult>;
  try {
    const [answer, reset] = await answers;
    if (reset!.status === "fulfilled" && lease.client.getTransactionStatus() === "I") lease.markReset();
    committed = answer!;
  } catch (err) {
    throw err instanceof GatewayError ? err : unknown(err);
  }
  if (committed.status === "rejected") {
    const err = committed.reason;
    if (err instanceof pg.DatabaseError && err.severity === "ERROR") throw toGatewayError(err);
    throw err instanceof GatewayError ? err : unknown(err);
  }
  if (committed.value.command === "ROLLBACK") {
    throw new GatewayError("TRANSACTION_ABORTED", "a statement of the transaction had failed, so COMMIT rolled it back");
  }
}

/** The error of a call that ended after its COMMIT was sent, before PostgreSQL said what it did. */
export function commitOutcomeUnknown(cause?: unknown): GatewayError {
  return new GatewayError("COMMIT_OUTCOME_UNKNOWN", "the call ended after COMMIT was sent: the transaction may or may not have committed", { cause });
}

/** BEGIN, and the transaction's start time read in the same simple query. */
function beginAndStart(begin: string): string {
  return `${begin}; SELECT transaction_timestamp()::text AS started`;
}

/** The start time from the answer to `beginAndStart`. */
function startedAt(results: unknown): string {
  return (results as pg.QueryResult<{ started: string }>[])[1]!.rows[0]!.started;
}
