// An interactive transaction opened now and ended later by commit() or rollback(), for APIs (pg's BEGIN … COMMIT, ORM drivers) that are not callback-shaped.
import type { Database } from "./database.js";
import { Code, GatewayError } from "./gateway-error.js";
import type { QueryResult, RowMode } from "./result.js";
import type { TransactionOptions } from "./transaction.js";
import type { Param } from "./values.js";

/** A transaction begun by `openTransaction`: its statements, then exactly one of commit or rollback. */
export interface OpenTransaction {
  /** Runs one statement inside the transaction; after commit or rollback it fails with TRANSACTION_OVER. */
  query<Row = Record<string, unknown>>(sql: string, params?: readonly Param[], options?: { rowMode?: RowMode }): Promise<QueryResult<Row>>;
  /** Commits; resolves once the gateway has confirmed it, throws what PostgreSQL or the gateway said otherwise. */
  commit(): Promise<void>;
  /** Rolls back; resolves once the gateway has ended the transaction. */
  rollback(): Promise<void>;
  /** True once commit or rollback was called, or the transaction ended on its own (its call failed). */
  readonly ended: boolean;
}

/** What the transaction's callback throws to ask for a rollback; never seen outside this module. */
const ROLLBACK = new Error("rolled back by request");

/** True for the callback's rollback request, which `Database.transaction` hands back wrapped in a GatewayError. */
function isRollback(err: unknown): boolean {
  return err === ROLLBACK || (err instanceof Error && err.cause === ROLLBACK);
}

/**
 * Begins an interactive transaction on `database` (`Database.transaction`,
 * run once: no retry on ABORTED, since the statements were the caller's and
 * only the caller can run them again) and hands it back open. Its begin
 * travels with its first statement, as with the callback form.
 */
export function openTransaction(database: Database, options: TransactionOptions = {}): OpenTransaction {
  let decide!: (commit: boolean) => void;
  const decided = new Promise<boolean>((resolve) => (decide = resolve));
  let tx: Parameters<Parameters<Database["transaction"]>[0]>[0] | undefined;
  let ended = false;
  /** Why the transaction ended by itself, if it did. */
  let failure: unknown;
  const outcome = database.transaction(
    async (t) => {
      tx = t;
      if (!(await decided)) throw ROLLBACK;
    },
    { ...options, maxAttempts: 1 },
  );
  // The transaction may end by itself (a failed begin, a lost call) before commit or rollback is asked for.
  outcome.then(
    () => (ended = true),
    (err: unknown) => {
      ended = true;
      failure = err;
    },
  );
  const end = async (commit: boolean) => {
    if (ended) throw failure !== undefined && !isRollback(failure) ? failure : over();
    ended = true;
    decide(commit);
    try {
      await outcome;
    } catch (err) {
      if (!isRollback(err)) throw err;
    }
  };
  return {
    query<Row>(sql: string, params?: readonly Param[], options: { rowMode?: RowMode } = {}) {
      // The callback runs synchronously up to its first await, so `tx` is set by now.
      if (ended || tx === undefined) return Promise.reject(over());
      const result = options.rowMode === "array" ? tx.query(sql, params, { rowMode: "array" }) : tx.query(sql, params);
      return result as Promise<QueryResult<Row>>;
    },
    commit: () => end(true),
    async rollback() {
      if (ended) {
        // A rollback after the transaction ended by itself has nothing left to undo, as ROLLBACK outside a transaction in PostgreSQL.
        await outcome.catch(() => undefined);
        return;
      }
      await end(false);
    },
    get ended() {
      return ended;
    },
  };
}

function over(): GatewayError {
  return new GatewayError("the transaction is over", Code.FailedPrecondition, "TRANSACTION_OVER", {}, undefined);
}
