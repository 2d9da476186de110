// Interactive transactions carried on a QueryStream: each run as a Transaction call runs it, its messages and answers identified by the client's number.
import { setMaxListeners } from "node:events";
import { create, toBinary } from "@bufbuild/protobuf";
import { beforeStatement, GatewayError, toGatewayError } from "../errors.js";
import {
  TransactionResponseSchema,
  type StreamTransactionRequest,
  type TransactionRequest,
  type TransactionRequestSchema,
  type TransactionResponseSchema as TransactionResponseDesc,
} from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { EncodedMessage, type RequestStream, type ResponseStream } from "../execution/call-streams.js";
import type { TransactionAnswer } from "../execution/response-encoding.js";
import { rolledBackAtShutdown, runTransaction, type TransactionLimits } from "../execution/interactive-transaction.js";
import { beginStatement } from "../execution/transaction-control.js";
import { onReadTarget, readRequestOf, type ReadRouting } from "./read-targets.js";
import type { Lease, PoolManager } from "../pool/pool-manager.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";
import { runInContext } from "../telemetry/tracing.js";
import type { Router } from "../tenancy/router.js";
import type { CallContext } from "./service-contract.js";
import type { StatementCheck } from "../execution/statement-policy.js";

/** What the stream's transactions need of their QueryStream. */
export interface StreamTransactionsHost {
  readonly router: Router;
  readonly pools: PoolManager;
  /** The clusters' replicas, for READ ONLY transactions; undefined: every transaction runs on the primary. */
  readonly reads?: ReadRouting;
  readonly limits: TransactionLimits;
  /** The statement check of a platform's policy, if it has one. */
  readonly checkOf: (platform: string) => StatementCheck | undefined;
  readonly ctx: CallContext;
  /**
   * Queues an answer that covers `frames` of the transaction messages read
   * (taken off the stream's count of unanswered ones once written); resolves
   * once the transport has taken it. `onSent` as for an `EncodedMessage`.
   */
  answer(answer: TransactionAnswer, frames: number, onSent?: () => void): Promise<void>;
}

/**
 * The transactions of one QueryStream. Each begin starts a transaction that
 * `runInteractiveTransaction` runs on a connection of its own, exactly as on
 * a Transaction call, reading its messages from a queue this class fills in
 * the order they arrive; its answers go out on the stream with its number.
 * A begin is admitted as a Transaction call is (the key, the platform's rate
 * limit), with a record of its own; its transaction is bounded by the
 * begin's timeout and the stream's deadline, and by the transaction limits.
 */
export class StreamTransactions {
  readonly #open = new Map<number, StreamTransaction>();
  /** The client half-closed, or the gateway drains: no message will come. */
  #ended: "half-closed" | "draining" | undefined;
  /** Aborted when the stream fails: its transactions are interrupted (as by a cancel), and roll back. */
  readonly #failed = new AbortController();
  readonly #signal: AbortSignal;

  constructor(private readonly host: StreamTransactionsHost) {
    this.#signal = AbortSignal.any([host.ctx.signal, this.#failed.signal]);
    // Each transaction waiting for a connection, or holding one, listens to it: one listener per transaction, not a leak (node warns beyond 10).
    setMaxListeners(0, this.#signal);
  }

  /** A message's transaction messages (`platform` is the message's). Throws to end the stream. */
  received(platform: string, frames: readonly StreamTransactionRequest[]): void {
    for (const frame of frames) {
      if (frame.transaction > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new GatewayError("INVALID_REQUEST", `a transaction's number must be at most ${Number.MAX_SAFE_INTEGER}`);
      }
      const number = Number(frame.transaction);
      const request = frame.request;
      const open = this.#open.get(number);
      if (request?.kind.case === "begin") {
        if (open !== undefined) throw new GatewayError("INVALID_REQUEST", `transaction ${number} of the stream is still open: a begin must use a free number`);
        if (request.kind.value.platform !== platform) {
          void this.host.answer({ transaction: number, failed: new GatewayError("INVALID_REQUEST", "a transaction's platform must be its message's") }, 1);
          continue;
        }
        this.#begin(number, request, frame.timeoutMs);
      } else if (open === undefined) {
        void this.host.answer({ transaction: number, failed: new GatewayError("TRANSACTION_NOT_OPEN", `transaction ${number} of the stream is not open`) }, 1);
      } else {
        open.push(request ?? ({ kind: { case: undefined } } as TransactionRequest));
      }
    }
  }

  /** The client half-closed: each open transaction is rolled back once it has run the messages it has. */
  halfClosed(): void {
    this.#ended ??= "half-closed";
    for (const transaction of this.#open.values()) transaction.end(this.#ended);
  }

  /** The stream fails: every open transaction is interrupted and rolled back (a COMMIT already sent is left to finish). */
  failed(): void {
    this.#ended ??= "half-closed";
    this.#failed.abort(new GatewayError("CANCELLED", "the stream failed"));
  }

  /** The gateway drains: each open transaction runs the messages it has, then (unless it ended) is rolled back with ROLLED_BACK_AT_SHUTDOWN. */
  drain(): void {
    this.#ended = "draining";
    for (const transaction of this.#open.values()) transaction.end(this.#ended);
  }

  /** Resolves once every transaction has ended. */
  async settled(): Promise<void> {
    await Promise.all([...this.#open.values()].map((t) => t.done));
  }

  #begin(number: number, request: TransactionRequest, timeoutMs: number): void {
    const { ctx, router, pools, reads, limits, checkOf } = this.host;
    const begin = request.kind.value as Extract<TransactionRequest["kind"], { case: "begin" }>["value"];
    const record = ctx.startPart();
    record.countAsTransaction();
    const transaction = new StreamTransaction(number, this.host);
    this.#open.set(number, transaction);
    transaction.unanswered = 1;
    if (this.#ended !== undefined) transaction.end(this.#ended);
    // The begin is answered by `begun` (or the failure): the queue starts after it.
    const deadline = Math.min(ctx.deadline, timeoutMs > 0 ? Date.now() + timeoutMs : Infinity);
    const run = async (): Promise<void> => {
      ctx.reauthorize(record);
      const database = await router.route({ principal: ctx.principal, record }, begin.platform, begin.tenantId);
      const statement = beginStatement(begin.options);
      await onReadTarget(reads, pools, database, readRequestOf(begin.options), (target) =>
        runTransaction(
          target,
          database,
          statement,
          transaction.counted(record),
          transaction.responses,
          { ...limits, onStatementError: (error) => record.queryFailed(error), check: checkOf(begin.platform) },
          { deadline, signal: this.#signal },
          (lease) => {
            transaction.lease = lease;
          },
        ),
      );
    };
    transaction.done = runInContext(record.traceContext, run).then(
      () => this.#ended_(transaction, record, undefined),
      (err: unknown) => this.#ended_(transaction, record, toGatewayError(err)),
    );
  }

  /** A transaction ended: with an error, that is its last answer (covering its messages still unanswered). Its number is free again. */
  #ended_(transaction: StreamTransaction, record: CallRecord, error: GatewayError | undefined): void {
    this.#open.delete(transaction.number);
    transaction.over = true;
    record.end(error);
    const left = transaction.unanswered;
    transaction.unanswered = 0;
    if (error !== undefined) void this.host.answer({ transaction: transaction.number, failed: error }, left);
    else if (left > 0) void this.host.answer({ transaction: transaction.number, failed: notAnswered() }, left);
  }
}

/** One transaction of a stream: the queue of its messages, and its answers out on the stream. */
class StreamTransaction {
  readonly #queue: TransactionRequest[] = [];
  #waiting: ((request: TransactionRequest | undefined) => void) | undefined;
  /** No message will come: the client half-closed, or the gateway drains. */
  #ended: "half-closed" | "draining" | undefined;
  /** Messages read and not yet answered. */
  unanswered = 0;
  lease: Lease | undefined;
  done: Promise<void> = Promise.resolve();
  /** Ended: its number may be another transaction's now, so an answer of its run still under way is dropped. */
  over = false;

  constructor(
    readonly number: number,
    private readonly host: StreamTransactionsHost,
  ) {}

  push(request: TransactionRequest): void {
    this.unanswered++;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting !== undefined) waiting(request);
    else this.#queue.push(request);
  }

  /** No message will come: a wait for one ends (see `#starved`). */
  end(why: "half-closed" | "draining"): void {
    this.#ended = why;
    if (this.#waiting !== undefined) this.#starved();
  }

  /** The queue as a Transaction call's requests, each statement counted in `record`. */
  counted(record: CallRecord): RequestStream<typeof TransactionRequestSchema> {
    return {
      peek: () => this.#queue[0],
      next: () => {
        const request = this.#queue.shift();
        if (request !== undefined) {
          if (request.kind.case === "statement") record.statements++;
          return Promise.resolve(request);
        }
        const promise = new Promise<TransactionRequest | undefined>((resolve) => (this.#waiting = resolve));
        if (this.#ended !== undefined) this.#starved();
        return promise.then((r) => {
          if (r?.kind.case === "statement") record.statements++;
          return r;
        });
      },
    };
  }

  /**
   * Waiting for a message that will not come: after a half-close, the
   * transaction is rolled back (`undefined`, as a Transaction call's
   * half-close); when the gateway drains, it is interrupted, and rolled back.
   */
  #starved(): void {
    const waiting = this.#waiting!;
    this.#waiting = undefined;
    if (this.#ended === "draining") this.lease?.interrupt(rolledBackAtShutdown());
    else waiting(undefined);
  }

  /** The transaction's answers, each out on the stream with its number (covering one message, when one is unanswered). */
  readonly responses: ResponseStream<typeof TransactionResponseDesc> = {
    send: (message) => {
      if (this.over) {
        if (message instanceof EncodedMessage) message.onSent?.();
        return Promise.resolve();
      }
      const frames = this.unanswered > 0 ? 1 : 0;
      this.unanswered -= frames;
      if (message instanceof EncodedMessage) return this.host.answer({ transaction: this.number, response: message.bytes }, frames, message.onSent);
      return this.host.answer({ transaction: this.number, response: toBinary(TransactionResponseSchema, create(TransactionResponseSchema, message)) }, frames);
    },
    pending: 0,
  };
}

/** Messages of a transaction that ended before it read them (a commit or rollback followed by more). */
function notAnswered(): GatewayError {
  return beforeStatement(new GatewayError("TRANSACTION_NOT_OPEN", "the transaction had ended before this message"));
}
