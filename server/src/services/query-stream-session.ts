// The gateway's side of a QueryStream call, the server end of the SDK's QueryStreamSession: numbered queries read in messages, answers sent as they are ready.
import { beforeStatement, GatewayError, toGatewayError } from "../errors.js";
import type { QueryStreamRequest, QueryStreamRequestSchema, QueryStreamResponseSchema } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { RequestStream, ResponseStream } from "../execution/call-streams.js";
import type { Outcome } from "../execution/pipeline.js";
import { checkQueryCount, runQueries, type Answers } from "../execution/query-many.js";
import { encodeAnswers } from "../execution/response-encoding.js";
import type { ResultAccount, ResultBudget } from "../execution/result-budget.js";
import type { CallLimits, PoolManager } from "../pool/pool-manager.js";
import type { CallRecord } from "../telemetry/call-telemetry.js";
import { runInContext } from "../telemetry/tracing.js";
import type { Router } from "../tenancy/router.js";
import type { CallContext } from "./service-contract.js";

/** What every QueryStream of a QueryService shares: where its queries go, its limits, and the gateway's drain. */
export interface QueryStreamShared {
  readonly router: Router;
  readonly pools: PoolManager;
  /** As `QueryServiceLimits.maxStreamQueries`. */
  readonly maxStreamQueries: number;
  /** The budget a message's results draw on (each message has an account of its own). */
  readonly results: ResultBudget;
  /** The limits of a message's statements: its deadline, capped at the service's longest statement, and the call's signal. */
  statementLimits(limits: { deadline: number; signal: AbortSignal }): CallLimits;
  /** Aborted when the gateway begins to shut down. */
  readonly draining: AbortSignal;
}

/** One message's queries, from their reading until all their answers are written out (the SDK's `Sent`, seen from this side). */
interface Received {
  /** The number of its first query over the stream. */
  readonly first: number;
  readonly record: CallRecord;
  /** Its results' share of the budget, given back once all its answers have been written out. */
  readonly account: ResultAccount;
  /** Its answers not yet written out. */
  unsent: number;
}

/** Answers waiting to leave as one response (see `QueryStreamSession.#answered`). */
interface Outbox {
  numbers: number[];
  outcomes: Outcome[];
  /** Each answer's message, whose countdown the answer's writing takes one off. */
  messages: Received[];
  bytes: number;
}

/** About the most bytes of results one QueryStream response carries (a result larger than this goes alone). */
const RESPONSE_BYTES = 1 << 20;

/**
 * One QueryStream call, the gateway's end of the SDK's `QueryStreamSession`:
 * each message read is numbered on from the last (as the SDK numbers what it
 * sends), admitted on its own (a rate-limited message gets RATE_LIMITED as
 * each query's answer and the stream goes on; any other refusal ends it), and
 * its queries run as QueryMany's (`runQueries`), in its trace context, with a
 * record of its own (log line, metrics, span). Each answer leaves as soon as
 * it is ready, with others ready in the same turn of the event loop.
 *
 * A query counts until the transport has taken its answer: once
 * `maxStreamQueries` are counted, the stream is not read, so a client that
 * does not read its answers stops the gateway reading its queries. When the
 * client half-closes, the queries read are answered and the call ends with
 * OK. When the gateway drains, the stream stops reading, answers what it
 * read, and ends with SHUTTING_DOWN (statement_sent false: the queries not
 * read were not run). A cancelled call ends its requests and its statements:
 * its queries' answers are the cancellation, not counted as their failures,
 * and dropped by the transport.
 */
export class QueryStreamSession {
  /** Queries read so far: the next one's number. */
  #numbered = 0;
  /** Queries read whose answers the transport has not yet taken. */
  #unanswered = 0;
  /** Queries read whose answers are not yet in the outbox. */
  #awaiting = 0;
  #outbox: Outbox | undefined;
  /** Each message's run until all its queries are answered. */
  readonly #running = new Set<Promise<void>>();
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
  ) {}

  /** Serves the call: resolves once the client has half-closed and every query read is answered; rejects as the call should end. */
  async run(): Promise<void> {
    const { draining } = this.shared;
    if (draining.aborted) this.#drained();
    else draining.addEventListener("abort", this.#drained, { once: true });
    try {
      await this.#read();
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

  /** A message arrives: its queries are numbered, admitted, and set running. Throws when the stream is refused. */
  #received(request: QueryStreamRequest): void {
    const count = request.queries.length;
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
    const message: Received = { first, record, account: this.shared.results.account(), unsent: count };
    // In the message's trace context: its statement spans hang under its span.
    const run = runInContext(record.traceContext, () => this.#runMessage(request, message, refused)).finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  /** Runs a message's queries, each answered as soon as its outcome is known; then ends its record. */
  async #runMessage(request: QueryStreamRequest, message: Received, refused: GatewayError | undefined): Promise<void> {
    const { router, pools } = this.shared;
    const { record } = message;
    let error: GatewayError | undefined;
    try {
      if (refused !== undefined) throw refused;
      record.statements = request.queries.length;
      router.checkPlatform(this.ctx, request.platform);
      checkQueryCount(request.queries.length, "a QueryStream message");
      const deadline = request.timeoutMs > 0 ? Date.now() + request.timeoutMs : Infinity;
      const databaseOf = (tenantId: string) => router.database(request.platform, tenantId);
      const answer: Answers = (indexes, outcomes) => {
        // Queries stopped by the stream's own cancellation are not failures of theirs: the stream's end counts it.
        if (!this.ctx.signal.aborted) record.tallyFailures(outcomes);
        this.#answered(message, indexes, outcomes);
      };
      const limits = this.shared.statementLimits({ deadline, signal: this.ctx.signal });
      record.setDatabases(await runQueries(pools, databaseOf, request.queries, limits, message.account, answer, "answer"));
    } catch (err) {
      // The message as a whole could not run (refused, a platform that is not the key's, too many queries): each query gets the error.
      error = toGatewayError(err);
      this.#answered(
        message,
        request.queries.map((_, i) => i),
        request.queries.map(() => ({ error: error! })),
      );
    }
    record.end(error);
  }

  /**
   * Answers are ready (some of `message`'s queries, by their index in it).
   * Answers that come in the same turn of the event loop (from several
   * connections' reads) leave as one response, of about `RESPONSE_BYTES` at
   * most (the client's receive limit can be low); at once when no query read
   * is still to be answered: no other answer can join them, and a lone
   * query's answer then leaves before its message's record is ended.
   */
  #answered(message: Received, indexes: readonly number[], outcomes: readonly Outcome[]): void {
    for (let j = 0; j < indexes.length; j++) {
      const outcome = outcomes[j]!;
      const bytes = outcome.result?.length ?? 256;
      if (this.#outbox !== undefined && this.#outbox.bytes + bytes > RESPONSE_BYTES) this.#flush();
      if (this.#outbox === undefined) {
        this.#outbox = { numbers: [], outcomes: [], messages: [], bytes: 0 };
        setImmediate(this.#flush);
      }
      this.#outbox.numbers.push(message.first + indexes[j]!);
      this.#outbox.outcomes.push(outcome);
      this.#outbox.messages.push(message);
      this.#outbox.bytes += bytes;
    }
    this.#awaiting -= indexes.length;
    if (this.#awaiting <= 0) this.#flush();
  }

  /** Sends the answers in the outbox as one response. */
  readonly #flush = (): void => {
    const outbox = this.#outbox;
    if (outbox === undefined) return;
    this.#outbox = undefined;
    const { numbers, outcomes, messages } = outbox;
    const written = encodeAnswers(numbers, outcomes, () => {
      for (const message of messages) if (--message.unsent === 0) message.account.release();
    });
    // Not awaited: back-pressure is `#unanswered` against `maxStreamQueries`, so answers cannot pile up.
    void this.responses.send(written).then(() => this.#taken(numbers.length));
  };

  /** `send` of a response of `count` answers has returned (the transport can take more): they no longer count against `maxStreamQueries`. */
  #taken(count: number): void {
    this.#unanswered -= count;
    if (this.#unanswered < this.shared.maxStreamQueries) this.#room?.();
  }

  /** The client half-closed (or the call ended, or the gateway drains): the queries read are answered, and the call ends. */
  async #ended(): Promise<void> {
    await Promise.all(this.#running);
    this.#flush();
    if (this.shared.draining.aborted)
      throw beforeStatement(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down: queries without an answer were not run"));
  }

  /** The gateway drains: the wait under way ends, and no more messages are read. */
  readonly #drained = (): void => {
    this.#stopped = true;
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
