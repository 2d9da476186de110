import pg from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import { IsolationLevel, type TransactionOptions } from "../gen/dbgateway/v1/query_service_pb.js";

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

/** Runs a transaction-control statement (BEGIN, ROLLBACK …), converting its errors. */
export async function control(client: pg.Client, sql: string): Promise<void> {
  try {
    await client.query(sql);
  } catch (err) {
    throw toGatewayError(err);
  }
}

/**
 * Commits the transaction open on `client`. A statement ERROR means PostgreSQL
 * rolled back (a serialization failure at commit, a deferred constraint): that
 * error. A COMMIT answered with ROLLBACK means the transaction had failed
 * before: TRANSACTION_ABORTED. Anything else after COMMIT was sent (a broken
 * connection, a FATAL error) leaves the outcome unknown: COMMIT_OUTCOME_UNKNOWN,
 * never an answer that claims either outcome.
 */
export async function commit(client: pg.Client): Promise<void> {
  let result: pg.QueryResult;
  try {
    result = await client.query("COMMIT");
  } catch (err) {
    if (err instanceof pg.DatabaseError && err.severity === "ERROR") throw toGatewayError(err);
    throw new GatewayError(
      "COMMIT_OUTCOME_UNKNOWN",
      "the connection to the database broke after COMMIT was sent: the transaction may or may not have committed",
      { cause: err },
    );
  }
  if (result.command === "ROLLBACK") {
    throw new GatewayError("TRANSACTION_ABORTED", "a statement of the transaction had failed, so COMMIT rolled it back");
  }
}

/** Fails when a statement ended the transaction it ran in (COMMIT, ROLLBACK, END …): the caller's next statements would run outside it. */
export function ensureStillInTransaction(client: pg.Client): void {
  if (client.getTransactionStatus() === "I") {
    throw new GatewayError(
      "TRANSACTION_ENDED_BY_STATEMENT",
      "a statement ended the transaction: control the transaction with the call's own commit and rollback, not with SQL",
    );
  }
}
