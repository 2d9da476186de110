// One attempt of an interactive transaction, over a Transaction call or the platform's QueryStream: begin, the callback's statements, then commit or rollback.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { IsolationLevel, TransactionRequestSchema, type QueryService, type TransactionResponse } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, GatewayError } from "./gateway-error.js";
import type { QueryStreamSession } from "./query-stream.js";
import { decodeResult, type QueryResult, type RowMode } from "./result.js";
import type { TypeParser } from "./type-parsers.js";
import { toValue, type Param } from "./values.js";

/** How a transaction runs. */
export interface TransactionOptions {
  isolationLevel?: "read committed" | "repeatable read" | "serializable";
  readOnly?: boolean;
  /** Only meaningful for a serializable read-only transaction. */
  deferrable?: boolean;
  /**
   * For a read-only transaction (not serializable), which a streaming replica
   * may serve: a commit token of a write it must see (default: the session's
   * or the client's latest for the database, as for `query`).
   */
  readAfter?: string;
}

/** The handle a `transaction()` callback runs its statements on. */
export interface Transaction {
  /** Runs one statement inside the transaction. Statements run in call order; those issued together (say with Promise.all) reach PostgreSQL together. */
  query<Row extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: readonly Param[],
    options?: { rowMode?: undefined },
  ): Promise<QueryResult<Row>>;
  /** The same, each row an array of values in column order (pg's `rowMode: "array"`). */
  query<Row extends unknown[] = unknown[]>(sql: string, params: readonly Param[] | undefined, options: { rowMode: "array" }): Promise<QueryResult<Row>>;
}

const ISOLATION = {
  "read committed": IsolationLevel.READ_COMMITTED,
  "repeatable read": IsolationLevel.REPEATABLE_READ,
  serializable: IsolationLevel.SERIALIZABLE,
} as const;

/** Encodes transaction options for the wire. */
export function transactionOptions(options: TransactionOptions): { isolationLevel: IsolationLevel; readOnly: boolean; deferrable: boolean; readAfter: string } {
  return {
    isolationLevel: options.isolationLevel === undefined ? IsolationLevel.UNSPECIFIED : ISOLATION[options.isolationLevel],
    readOnly: options.readOnly ?? false,
    deferrable: options.deferrable ?? false,
    readAfter: options.readAfter ?? "",
  };
}

/** Codes with which the outcome of a COMMIT that was sent stays unknown to the client. */
const UNCERTAIN = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Unknown, Code.Internal]);

/** The messages of one transaction and its answers, over a Transaction call of its own or the platform's QueryStream. */
export interface TransactionChannel {
  send(request: MessageInitShape<typeof TransactionRequestSchema>): void;
  /** The next answer, in order; throws the error that ended the transaction (or its call). */
  receive(): Promise<TransactionResponse["kind"]>;
  /** After commit or rollback: nothing more is sent (the call, if any, is half-closed). */
  halfClose(): void;
  /** After the last answer: resolves once the call, if any, has ended cleanly. */
  finish(): Promise<void>;
  /** Ends it (the call, if any, is cancelled when still open). */
  close(): void;
}

/** A transaction's own Transaction call: a bidirectional stream ended by commit or rollback. */
export function transactionCall(client: Client<typeof QueryService>, call: { signal?: AbortSignal; timeoutMs?: number }): TransactionChannel {
  const requests = createWritableIterable<MessageInitShape<typeof TransactionRequestSchema>>();
  const abort = new AbortController();
  const onAbort = () => abort.abort(call.signal?.reason);
  call.signal?.addEventListener("abort", onAbort, { once: true });
  const responses = client.transaction(requests, { signal: abort.signal, timeoutMs: call.timeoutMs })[Symbol.asyncIterator]();
  return {
    send(request) {
      requests.write(create(TransactionRequestSchema, request)).catch(() => undefined);
    },
    async receive() {
      let next: IteratorResult<TransactionResponse>;
      try {
        next = await responses.next();
      } catch (err) {
        throw GatewayError.from(err);
      }
      if (next.done) throw new GatewayError("the gateway ended the transaction stream without an answer", Code.Internal, "INTERNAL", {}, undefined);
      return next.value.kind;
    },
    halfClose() {
      requests.close(); // nothing follows: half-close, so the call ends cleanly on both sides
    },
    async finish() {
      await responses.next().catch(() => undefined); // the call's status: the stream ends cleanly
    },
    close() {
      requests.close();
      call.signal?.removeEventListener("abort", onAbort);
      abort.abort(OVER); // ends the call if it is still open; a reason of our own spares making an AbortError per call
    },
  };
}

/**
 * A transaction carried on the platform's QueryStream (`session`): its
 * messages leave with the stream's next message, its answers come by its
 * number. `timeoutMs` bounds it from when the gateway reads its begin.
 */
export function streamTransaction(session: QueryStreamSession, timeoutMs: number | undefined): TransactionChannel {
  const answers: TransactionResponse["kind"][] = [];
  const waiters: { resolve(answer: TransactionResponse["kind"]): void; reject(err: unknown): void }[] = [];
  let failure: GatewayError | undefined;
  const fail = (error: GatewayError) => {
    failure ??= error;
    for (const waiter of waiters.splice(0)) waiter.reject(failure);
  };
  const transaction = session.openTransaction({
    answer(answer) {
      const waiter = waiters.shift();
      if (waiter === undefined) answers.push(answer);
      else waiter.resolve(answer);
    },
    fail,
  });
  // The gateway bounds the transaction from when it reads the begin; this bounds the wait here (a stream not read, a stalled link).
  const timer =
    timeoutMs !== undefined && timeoutMs > 0
      ? setTimeout(() => fail(new GatewayError("the transaction's deadline passed", Code.DeadlineExceeded, "DEADLINE_EXCEEDED", {}, undefined)), timeoutMs)
      : undefined;
  let begun = false;
  return {
    send(request) {
      transaction.send(request, begun ? undefined : timeoutMs);
      begun = true;
    },
    receive() {
      const answer = answers.shift();
      if (answer !== undefined) return Promise.resolve(answer);
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
    halfClose: () => undefined,
    finish: () => Promise.resolve(),
    close() {
      clearTimeout(timer);
      transaction.close();
    },
  };
}

/**
 * One attempt of an interactive transaction over `channel`: begin, the
 * callback's statements, then commit when it returns or rollback when it
 * throws. An error after commit was sent that does not say what happened
 * (a broken connection, a deadline) becomes COMMIT_OUTCOME_UNKNOWN.
 */
export async function runTransactionOnce<T>(
  channel: TransactionChannel,
  target: { platform: string; tenantId: string },
  fn: (tx: Transaction) => Promise<T>,
  options: TransactionOptions,
  parserFor: (oid: number) => TypeParser,
  onCommitToken?: (token: string) => void,
): Promise<T> {
  const { send, receive } = channel;
  let open = true;
  /** Commit or rollback is on its way: no statement may follow it. */
  let ending = false;
  try {
    // The first statement is sent without waiting for `begun`: the gateway answers in order.
    send({ kind: { case: "begin", value: { ...target, options: transactionOptions(options) } } });
    const begun = receive().then((answer) => expect(answer, "begun"));
    begun.catch(() => undefined); // awaited before anything else is read
    let queue: Promise<unknown> = Promise.resolve();
    const tx: Transaction = {
      query<Row>(sql: string, params: readonly Param[] = [], options: { rowMode?: RowMode } = {}) {
        if (!open || ending) return Promise.reject(transactionOver());
        // Sent at once, not after the answers before it: statements issued together travel, and reach PostgreSQL, together.
        send({ kind: { case: "statement", value: { sql, params: params.map(toValue) } } });
        const run = async () => {
          await begun;
          const answer = await receive();
          if (answer.case === "error") throw GatewayError.fromStatus(answer.value);
          if (answer.case !== "result") throw unexpected(answer.case);
          return decodeResult<Row>(answer.value, parserFor, options.rowMode);
        };
        const result = queue.then(run, run);
        queue = result.catch(() => undefined);
        return result;
      },
    };
    let value: T;
    try {
      value = await fn(tx);
      await queue;
      await begun; // a failed begin fails the transaction, even if `fn` caught the error
    } catch (err) {
      await begun.catch(() => undefined);
      if (open) {
        ending = true;
        send({ kind: { case: "rollback", value: {} } });
        channel.halfClose();
        await queue; // the answers of statements sent before the rollback come before its own
        await receive().catch(() => undefined);
        await channel.finish();
      }
      throw err;
    }
    ending = true;
    send({ kind: { case: "commit", value: {} } });
    channel.halfClose();
    await queue; // a statement sent after the callback returned (one it did not await) is answered before the commit
    try {
      const committed = await receive();
      expect(committed, "committed");
      if (committed.case === "committed") onCommitToken?.(committed.value.commitToken);
    } catch (err) {
      const error = GatewayError.from(err);
      if (!UNCERTAIN.has(error.code) || error.reason === "COMMIT_OUTCOME_UNKNOWN") throw error;
      throw new GatewayError(
        `the transaction may or may not have committed: ${error.message}`,
        Code.Unavailable,
        "COMMIT_OUTCOME_UNKNOWN",
        error.metadata,
        undefined,
        { cause: error },
      );
    }
    // Committed, and confirmed. Reading the call's status lets the stream end cleanly; a failure now changes nothing.
    await channel.finish();
    return value;
  } finally {
    open = false;
    channel.close();
  }
}

/** The error of a statement made after its transaction is over. */
function transactionOver(): GatewayError {
  return new GatewayError("the transaction is over", Code.FailedPrecondition, "TRANSACTION_OVER", {}, undefined);
}

/** The reason the SDK gives when it ends a transaction's call itself, after the transaction is over. */
const OVER = transactionOver();

function expect(answer: TransactionResponse["kind"], kind: "begun" | "committed"): void {
  if (answer.case !== kind) throw unexpected(answer.case);
}

function unexpected(kind: string | undefined): GatewayError {
  return new GatewayError(`the gateway answered "${kind}" out of turn`, Code.Internal, "INTERNAL", {}, undefined);
}
