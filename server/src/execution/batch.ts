import type { MessageInitShape } from "@bufbuild/protobuf";
import { atStatement, GatewayError, leavesConnectionUsable, toGatewayError, toRpcStatus } from "../errors.js";
import type { BatchResultSchema, TransactionOptions } from "../gen/dbgateway/v1/query_service_pb.js";
import type { Statement } from "../gen/dbgateway/v1/values_pb.js";
import type { Lease } from "../pool/pool-manager.js";
import { execute, prepareStatement, type PreparedStatement } from "./execute.js";
import { beginStatement, OpenTransaction } from "./transaction-control.js";

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
 */
export async function runBatch(lease: Lease, batch: PreparedBatch): Promise<MessageInitShape<typeof BatchResultSchema>[]> {
  const { client } = lease;
  const results: MessageInitShape<typeof BatchResultSchema>[] = [];
  if (batch.atomic) {
    const transaction = await OpenTransaction.begin(lease, batch.begin);
    for (const [i, statement] of batch.statements.entries()) {
      try {
        const result = await execute(lease, statement);
        await transaction.check(result.command);
        results.push({ outcome: { case: "result", value: result } });
      } catch (err) {
        throw atStatement(toGatewayError(err), i);
      }
      if (lease.signal.aborted) return results;
    }
    await transaction.commit();
    return results;
  }
  for (const [i, statement] of batch.statements.entries()) {
    try {
      results.push({ outcome: { case: "result", value: await execute(lease, statement) } });
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
      results[i] = { outcome: { case: "error", value: toRpcStatus(error) } };
    }
    if (lease.signal.aborted) return results;
  }
  return results;
}
