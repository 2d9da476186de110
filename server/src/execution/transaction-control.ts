import pg from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import { IsolationLevel, type TransactionOptions } from "../gen/dbgateway/v1/query_service_pb.js";
import { RESET_STATEMENT, type Lease } from "../pool/pool-manager.js";
import { sendPipelined } from "./pipeline.js";

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
  private constructor(
    private readonly lease: Lease,
    /** transaction_timestamp() at BEGIN: a transaction chained by COMMIT/ROLLBACK AND CHAIN has another. */
    private readonly startedAt: string,
  ) {}

  /** Runs BEGIN, and reads the transaction's start time in the same round trip. */
  static async begin(lease: Lease, begin: string): Promise<OpenTransaction> {
    try {
      const results = (await lease.client.query(`${begin}; SELECT transaction_timestamp()::text AS started`)) as unknown as pg.QueryResult<{ started: string }>[];
      return new OpenTransaction(lease, results[1]!.rows[0]!.started);
    } catch (err) {
      throw toGatewayError(err);
    }
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

  /** Commits: see `commit`. */
  commit(): Promise<void> {
    return commit(this.lease);
  }

  async rollback(): Promise<void> {
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
 * TRANSACTION_ABORTED. Anything else after COMMIT was sent (a broken
 * connection, a FATAL error, the call interrupted) leaves the outcome
 * unknown: COMMIT_OUTCOME_UNKNOWN, never an answer that claims either
 * outcome. An interruption sends no cancel: a COMMIT on its way is left to
 * finish.
 */
export async function commit(lease: Lease): Promise<void> {
  const unknown = (cause?: unknown) =>
    new GatewayError("COMMIT_OUTCOME_UNKNOWN", "the call ended after COMMIT was sent: the transaction may or may not have committed", { cause });
  const answers = lease.uninterruptible(
    () => sendPipelined(lease, (client) => [client.query("COMMIT"), client.query(RESET_STATEMENT)]),
    unknown(),
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
