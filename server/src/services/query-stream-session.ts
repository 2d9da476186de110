// The gateway's side of a QueryStream call, the server end of the SDK's QueryStreamSession: numbered queries and batches, and transactions, read in messages, answers sent as they are ready.
import { beforeStatement, GatewayError, toGatewayError } from "../errors.js";
import type {
  BatchRequest,
  QueryStreamRequest,
  QueryStreamRequestSchema,
  QueryStreamResponseSchema,
} from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { prepareBatch, runBatch } from "../execution/batch.js";
import type { RequestStream, ResponseStream } from "../execution/call-streams.js";
import type { TransactionLimits } from "../execution/interactive-transaction.js";
import type { Outcome } from "../execution/pipeline.js";
import { checkQueryCount, limitsOn, runQueries, type Answers } from "../execution/query-many.js";
import { encodeAnswers, encodeBatchResults, type StreamOutcome, type TransactionAnswer } from "../execution/response-encoding.js";
import type { ResultAccount, ResultBudget } from "../execution/result-budget.js";
import type { PoolManager } from "../pool/pool-manager.js";
import type { ReadRouting } from "./read-targets.js";
import { mayWrite } from "../execution/leading-keyword.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";
import { runInContext } from "../telemetry/tracing.js";
import type { Router } from "../tenancy/router.js";
import type { CallContext } from "./service-contract.js";
import { StreamTransactions } from "./stream-transactions.js";
import { databaseNameOrEmpty } from "../tenancy/naming.js";
import type { StatementLimits } from "../execution/query-many.js";
import type { StatementCheck } from "../execution/statement-policy.js";

/** What every QueryStream of a QueryService shares: where its queries go, its limits, and the gateway's drain. */
export interface QueryStreamShared {
  readonly router: Router;
  readonly pools: PoolManager;
  /** As `QueryServiceLimits.reads`: for the READ ONLY transactions the stream carries. */
  readonly reads?: ReadRouting;
  /** As `QueryServiceLimits.maxStreamQueries`. */
  readonly maxStreamQueries: number;
  /** The budget a message's results draw on (each message has an account of its own, each batch too). */
  readonly results: ResultBudget;
  /** The limits of a message's statements: its deadline, capped at the service's longest statement, and the call's signal. */
  /** A call's limits, with the statements `platform` may run. */
  statementLimits(limits: { deadline: number; signal: AbortSignal }, platform: string): StatementLimits;
  /** The statement check of a platform's policy, if it has one. */
  checkOf(platform: string): StatementCheck | undefined;
  /** Aborted when the gateway begins to shut down. */
  readonly draining: AbortSignal;
  /** The limits of the transactions the stream carries, as of a Transaction call's. */
  readonly transactions: TransactionLimits;
}

/** One message's queries and batches, from their reading until all their answers are written out (the SDK's `Sent`, seen from this side). */
interface Received {
  /** The number of its first query over the stream. */
  readonly first: number;
  readonly record: CallRecord;
  /** Its queries' results' share of the budget, given back once all its queries' answers have been written out. */
  readonly account: ResultAccount;
  /** Its queries' answers not yet written out. */
  unsent: number;
}

/** Answers waiting to leave as one response (see `QueryStreamSession.#answered`). */
interface Outbox {
  numbers: number[];
  outcomes: StreamOutcome[];
  /** Each query's answer's message, whose countdown the answer's writing takes one off (undefined for a batch's answer). */
  messages: (Received | undefined)[];
  transactions: TransactionAnswer[];
  /** Called once the response has been written out: accounts of batches and transaction results given back. */
  sent: (() => void)[];
  /** Called once the transport has taken the response: transactions waiting to send their next answer go on. */
  taken: (() => void)[];
  /** The queries, batches and transaction messages read that it answers. */
  count: number;
  bytes: number;
}

/** About the most bytes of results one QueryStream response carries (a result larger than this goes alone). */
const RESPONSE_BYTES = 1 << 20;

/** What this gateway carries on a QueryStream besides queries: the stream's first response. */
const FEATURES = { features: { batches: true, transactions: true } };

/**
 * One QueryStream call, the gateway's end of the SDK's `QueryStreamSession`:
 * each message read is numbered on from the last (as the SDK numbers what it
 * sends: its queries, then its batches), admitted on its own (a rate-limited
 * message gets RATE_LIMITED as each query's and batch's answer and the stream
 * goes on; any other refusal ends it), and its queries run as QueryMany's
 * (`runQueries`) and its batches as Batch calls', in its trace context, with
 * a record of its own (log line, metrics, span). Its transaction messages go
 * to `StreamTransactions`. Each answer leaves as soon as it is ready, with
 * others ready in the same turn of the event loop.
 *
 * A query, batch or transaction message counts until the transport has taken
 * its answer: once `maxStreamQueries` are counted, the stream is not read, so
 * a client that does not read its answers stops the gateway reading. When the
 * client half-closes, what was read is answered (open transactions rolled
 * back) and the call ends with OK. When the gateway drains, the stream stops
 * reading, answers what it read (open transactions rolled back once they have
 * run the messages read), and ends with SHUTTING_DOWN (statement_sent false:
 * queries not read were not run). A cancelled call ends its requests and its
 * statements: its answers are the cancellation, not counted as failures, and
 * dropped by the transport.
 */
export class QueryStreamSession {
  /** Queries and batches read so far: the next one's number. */
  #numbered = 0;
  /** Queries, batches and transaction messages read whose answers the transport has not yet taken. */
  #unanswered = 0;
  /** Queries, batches and transaction messages read whose answers are not yet in the outbox. */
  #awaiting = 0;
  #outbox: Outbox | undefined;
  /** Each message's run until all its queries and batches are answered. */
  readonly #running = new Set<Promise<void>>();
  readonly #transactions: StreamTransactions;
  /** Ends the wait for room, when there is some. */
  #room: (() => void) | undefined;
  /** The gateway drains: no message is read any more. */
  #stopped = false;
  /** Ends the wait under way (for a message, or for room) when the gateway drains. */
  #wake: (() => void) | undefined;

  constructor(
    private readonly shared: QueryStreamShared,
    private readonly requests: RequestStream<typeof QueryStreamRequestSchema>,
    private readonly responses: ResponseStream<typeof QueryStreamResponseSchema>,
    private readonly ctx: CallContext,
  ) {
    this.#transactions = new StreamTransactions({
      router: shared.router,
      pools: shared.pools,
      reads: shared.reads,
      limits: shared.transactions,
      checkOf: shared.checkOf,
      ctx,
      answer: (answer, frames, onSent) =>
        new Promise<void>((resolve) => {
          const outbox = this.#add(answer.response?.length ?? 256);
          outbox.transactions.push(answer);
          outbox.count += frames;
          if (onSent !== undefined) outbox.sent.push(onSent);
          outbox.taken.push(resolve);
          this.#awaiting -= frames;
          this.#flushIfDone();
        }),
    });
  }

  /** Serves the call: resolves once the client has half-closed and everything read is answered; rejects as the call should end. */
  async run(): Promise<void> {
    const { draining } = this.shared;
    void this.responses.send(FEATURES);
    if (draining.aborted) this.#drained();
    else draining.addEventListener("abort", this.#drained, { once: true });
    try {
      await this.#read();
    } catch (err) {
      this.#transactions.failed(); // the stream fails: its open transactions roll back
      throw err;
    } finally {
      draining.removeEventListener("abort", this.#drained);
    }
    await this.#ended();
  }

  /** Reads messages and starts each, until the client half-closes or the gateway drains. */
  async #read(): Promise<void> {
    for (;;) {
      const request = await this.#unlessStopped(this.requests.next());
      if (request === undefined) return;
      this.#received(request);
      while (this.#unanswered >= this.shared.maxStreamQueries && !this.ctx.signal.aborted && !this.shared.draining.aborted) {
        await this.#unlessStopped(new Promise<void>((resolve) => (this.#room = resolve)));
      }
    }
  }

  /** A message arrives: its queries and batches are numbered, admitted, and set running; its transaction messages passed on. Throws when the stream is refused. */
  #received(request: QueryStreamRequest): void {
    const frames = request.transactions.length;
    if (frames > 0) {
      this.#unanswered += frames;
      this.#awaiting += frames;
      this.#transactions.received(request.platform, request.transactions);
    }
    const count = request.queries.length + request.batches.length;
    const first = this.#numbered;
    this.#numbered += count;
    if (count === 0) return;
    const record = this.ctx.startPart();
    let refused: GatewayError | undefined;
    try {
      this.ctx.reauthorize(record);
    } catch (err) {
      refused = toGatewayError(err);
      // Over the rate limit: this message's queries get the error, and the stream goes on. Any other refusal ends it.
      if (refused.reason !== "RATE_LIMITED") {
        record.end(refused);
        throw err;
      }
    }
    this.#unanswered += count;
    this.#awaiting += count;
    // The message's results hold their share of the budget until all its answers have been written out.
    const message: Received = { first, record, account: this.shared.results.account(), unsent: request.queries.length };
    // In the message's trace context: its statement spans hang under its span.
    const run = runInContext(record.traceContext, () => this.#runMessage(request, message, refused)).finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  /** Runs a message's queries and batches, each answered as soon as its outcome is known; then ends its record. */
  async #runMessage(request: QueryStreamRequest, message: Received, refused: GatewayError | undefined): Promise<void> {
    const { router, pools } = this.shared;
    const { record } = message;
    const { queries, batches } = request;
    let error: GatewayError | undefined;
    try {
      if (refused !== undefined) throw refused;
      record.statements = queries.length + batches.reduce((n, b) => n + b.statements.length, 0);
      router.checkPlatform(this.ctx, request.platform);
      checkQueryCount(queries.length + batches.length, "a QueryStream message");
      const deadline = request.timeoutMs > 0 ? Date.now() + request.timeoutMs : Infinity;
      const limits = this.shared.statementLimits({ deadline, signal: this.ctx.signal }, request.platform);
      const databaseOf = (tenantId: string) => router.database(request.platform, tenantId);
      const answer: Answers = (indexes, outcomes) => {
        // Queries stopped by the stream's own cancellation are not failures of theirs: the stream's end counts it.
        if (!this.ctx.signal.aborted) record.tallyFailures(outcomes, (i) => databaseNameOrEmpty(request.platform, queries[indexes[i]!]!.tenantId));
        this.#answered(message, indexes, outcomes);
      };
      const runs: Promise<string[]>[] = [];
      if (queries.length > 0) runs.push(runQueries(pools, databaseOf, queries, limits, message.account, answer, "answer"));
      for (const [i, batch] of batches.entries()) {
        runs.push(this.#runBatch(request.platform, batch, message.first + queries.length + i, limits, record));
      }
      record.setDatabases((await Promise.all(runs)).flat());
    } catch (err) {
      // The message as a whole could not run (refused, a platform that is not the key's, too many queries): each query and batch gets the error.
      error = toGatewayError(err);
      this.#answered(
        message,
        queries.map((_, i) => i),
        queries.map(() => ({ error: error! })),
      );
      for (let i = 0; i < batches.length; i++) this.#batchAnswered(message.first + queries.length + i, { error });
    }
    record.end(error);
  }

  /** Runs one batch of a message as a Batch call runs it (its results limited together, in an account of their own); answers it. Returns its database. */
  async #runBatch(platform: string, request: BatchRequest, number: number, limits: StatementLimits, record: CallRecord): Promise<string[]> {
    const { router, pools, results } = this.shared;
    const account = results.account(true);
    let database: string | undefined;
    try {
      if (request.platform !== "" && request.platform !== platform) throw new GatewayError("INVALID_REQUEST", "a batch's platform must be its message's");
      database = await router.database(platform, request.tenantId);
      const batch = prepareBatch(request.statements, request.atomic, request.transactionOptions, this.shared.checkOf(platform));
      const outcomes = await pools.withConnection(database, (lease) => runBatch(lease, batch, account), limitsOn(database, limits));
      if (limits.afterWrites !== undefined && batch.statements.some((st) => mayWrite(st.sql))) await limits.afterWrites(database);
      this.#batchAnswered(number, { batch: encodeBatchResults(outcomes) }, () => account.release());
    } catch (err) {
      account.release();
      const error = toGatewayError(err);
      if (!this.ctx.signal.aborted) record.tallyFailures([{ error }], () => database ?? "");
      this.#batchAnswered(number, { error });
    }
    return database === undefined ? [] : [database];
  }

  /** Starts an outbox for `bytes` more (sending the one under way first when they would not fit). */
  #add(bytes: number): Outbox {
    if (this.#outbox !== undefined && this.#outbox.bytes + bytes > RESPONSE_BYTES) this.#flush();
    if (this.#outbox === undefined) {
      this.#outbox = { numbers: [], outcomes: [], messages: [], transactions: [], sent: [], taken: [], count: 0, bytes: 0 };
      setImmediate(this.#flush);
    }
    this.#outbox.bytes += bytes;
    return this.#outbox;
  }

  /**
   * Answers are ready (some of `message`'s queries, by their index in it).
   * Answers that come in the same turn of the event loop (from several
   * connections' reads) leave as one response, of about `RESPONSE_BYTES` at
   * most (the client's receive limit can be low); at once when nothing read
   * is still to be answered: no other answer can join them, and a lone
   * query's answer then leaves before its message's record is ended.
   */
  #answered(message: Received, indexes: readonly number[], outcomes: readonly Outcome[]): void {
    for (let j = 0; j < indexes.length; j++) {
      const outcome = outcomes[j]!;
      const outbox = this.#add(outcome.result?.length ?? 256);
      outbox.numbers.push(message.first + indexes[j]!);
      outbox.outcomes.push(outcome);
      outbox.messages.push(message);
      outbox.count++;
    }
    this.#awaiting -= indexes.length;
    this.#flushIfDone();
  }

  /** A batch's answer is ready: its results, or the error a Batch call would fail with. */
  #batchAnswered(number: number, outcome: StreamOutcome, onSent?: () => void): void {
    const outbox = this.#add(outcome.batch?.length ?? 256);
    outbox.numbers.push(number);
    outbox.outcomes.push(outcome);
    outbox.messages.push(undefined);
    if (onSent !== undefined) outbox.sent.push(onSent);
    outbox.count++;
    this.#awaiting--;
    this.#flushIfDone();
  }

  #flushIfDone(): void {
    if (this.#awaiting <= 0) this.#flush();
  }

  /** Sends the answers in the outbox as one response. */
  readonly #flush = (): void => {
    const outbox = this.#outbox;
    if (outbox === undefined) return;
    this.#outbox = undefined;
    const { numbers, outcomes, messages, transactions, sent, taken, count } = outbox;
    const written = encodeAnswers(
      numbers,
      outcomes,
      () => {
        for (const message of messages) if (message !== undefined && --message.unsent === 0) message.account.release();
        for (const done of sent) done();
      },
      transactions,
    );
    // Not awaited: back-pressure is `#unanswered` against `maxStreamQueries`, so answers cannot pile up.
    void this.responses.send(written).then(() => {
      this.#taken(count);
      for (const go of taken) go();
    });
  };

  /** `send` of a response answering `count` of what was read has returned (the transport can take more): they no longer count against `maxStreamQueries`. */
  #taken(count: number): void {
    this.#unanswered -= count;
    if (this.#unanswered < this.shared.maxStreamQueries) this.#room?.();
  }

  /** The client half-closed (or the call ended, or the gateway drains): what was read is answered, and the call ends. */
  async #ended(): Promise<void> {
    if (this.shared.draining.aborted) this.#transactions.drain();
    else this.#transactions.halfClosed();
    await Promise.all([...this.#running, this.#transactions.settled()]);
    this.#flush();
    if (this.shared.draining.aborted)
      throw beforeStatement(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down: queries without an answer were not run"));
  }

  /** The gateway drains: the wait under way ends, and no more messages are read. */
  readonly #drained = (): void => {
    this.#stopped = true;
    this.#transactions.drain();
    this.#wake?.();
  };

  /**
   * `promise`'s value, or undefined at once when the gateway drains. The drain
   * calls `#wake` rather than settling a promise raced against: every race
   * adds a reaction to a promise that lives as long as the stream, holding
   * each message's queries.
   */
  #unlessStopped<T>(promise: Promise<T>): Promise<T | undefined> {
    if (this.#stopped) return Promise.resolve(undefined);
    return new Promise<T | undefined>((resolve, reject) => {
      this.#wake = () => resolve(undefined);
      promise.then(resolve, reject);
    }).finally(() => (this.#wake = undefined));
  }
}
