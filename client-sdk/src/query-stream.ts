// The SDK's side of a platform's QueryStream: numbered queries sent in messages, each answer settling its query, the stream closed when idle.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createWritableIterable, type WritableIterable } from "@connectrpc/connect/protocol";
import type {
  BatchRequestSchema,
  BatchResponse,
  BatchResult,
  QueryService,
  QueryStreamRequestSchema,
  QueryStreamResponse,
  StreamFeatures,
  StreamTransactionRequestSchema,
  TenantQuerySchema,
  TransactionResponse,
} from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { ResultSet, Value } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import { Code, GatewayError } from "./gateway-error.js";
import { outsideTraces, traceContextOf, type CallerContext } from "./trace-context.js";

/** A query waiting for its answer. */
export interface PendingQuery {
  readonly tenantId: string;
  readonly sql: string;
  readonly params: Value[];
  /** The caller's trace context when it made the query: the gateway's span for the query continues its trace. */
  readonly caller: CallerContext;
  resolve(result: ResultSet): void;
  reject(err: unknown): void;
}

/** A batch waiting for its answer on a QueryStream. */
export interface PendingBatch {
  readonly request: MessageInitShape<typeof BatchRequestSchema>;
  resolve(response: BatchResponse): void;
  reject(err: unknown): void;
  /** Runs the batch as a Batch call instead: the stream it was meant for does not carry batches. */
  fallback(): void;
}

/** A transaction's messages sent on a QueryStream, and where its answers go (see `QueryStreamSession.openTransaction`). */
export interface StreamTransactionListener {
  answer(answer: TransactionResponse["kind"]): void;
  /** The stream ended with the transaction open: its error. */
  fail(error: GatewayError): void;
}

type Frame = MessageInitShape<typeof StreamTransactionRequestSchema>;

/** Settles a query with the outcome the gateway sent for it (a QueryMany result or a QueryStream answer). */
export function settle(query: PendingQuery, outcome: BatchResult["outcome"] | undefined): void {
  if (outcome?.case === "result") query.resolve(outcome.value);
  else if (outcome?.case === "error") query.reject(GatewayError.fromStatus(outcome.value));
  else query.reject(noResult());
}

/** A result the gateway did not send. */
export function noResult(): GatewayError {
  return new GatewayError("the gateway sent no result", Code.Internal, "INTERNAL", {}, undefined);
}

/** The queries as a request carries them, each with its caller's trace context (a call carries several callers' queries). */
export function toTenantQueries(queries: readonly PendingQuery[]): MessageInitShape<typeof TenantQuerySchema>[] {
  return queries.map((q) => ({ tenantId: q.tenantId, sql: q.sql, params: q.params, traceContext: traceContextOf(q.caller) }));
}

/** How long past its deadline an atomic batch waits for the gateway's answer: the gateway's grace period for cancels (2 s), and some. */
const ATOMIC_ANSWER_GRACE_MS = 3_000;

/** The queries and batches of one message sent, for its deadline. */
interface Sent {
  readonly timeoutMs: number | undefined;
  unanswered: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** What waits for an answer by its number: a query or a batch. */
type Waiting = { query: PendingQuery; batch?: undefined; sent: Sent } | { query?: undefined; batch: PendingBatch; sent: Sent };

/** An open QueryStream is half-closed once it has had no query in flight for this long. */
export const STREAM_LINGER_MS = 500;

/**
 * One open QueryStream call of a platform: each `send` writes a message of
 * queries and batches, numbered in the order sent as the gateway numbers
 * them, and each answer settles its query or batch, whatever order the
 * gateway answers in. The callers answered first can send their next queries
 * while the others are still running, so the client's and the gateway's work
 * overlap instead of alternating, and a message costs no gRPC call.
 * Transactions opened on it (`openTransaction`) send their messages with the
 * next message written, and get their answers by their number.
 *
 * A query's timeout is kept here too (the gateway counts it from when it
 * reads the message): it fails with DEADLINE_EXCEEDED when it passes, and a
 * late answer is dropped. When the stream ends, the queries still waiting
 * fail with its error: UNAVAILABLE with `statement_sent: "false"` when the
 * gateway shut down (they were not run: the retry layer sends them again),
 * or the stream's error as a failed call's; open transactions fail with it
 * too. Once nothing has been in flight for `STREAM_LINGER_MS`, the stream is
 * half-closed, so that an idle client holds no call open (and a process can
 * exit). The gateway's first response says whether it carries batches and
 * transactions (`carries`); until then, and with a gateway that does not,
 * they go as calls of their own.
 */
export class QueryStreamSession {
  readonly #requests: WritableIterable<MessageInitShape<typeof QueryStreamRequestSchema>>;
  readonly #waiting = new Map<number, Waiting>();
  readonly #transactions = new Map<number, StreamTransactionListener>();
  /** Transaction messages not yet written: they leave with the next message, or on their own at the end of the turn. */
  #frames: Frame[] = [];
  #framesScheduled = false;
  #numbered = 0;
  #transactionNumbers = 0;
  #features: StreamFeatures | undefined;
  /** The gateway said it is shutting down (a transaction rolled back at shutdown): no new work goes to this stream. */
  #draining = false;
  #open = true;
  #lastActive = performance.now();
  #linger: ReturnType<typeof setTimeout> | undefined;

  constructor(
    client: Client<typeof QueryService>,
    private readonly platform: string,
    /** Called once when the session takes no more queries (half-closed, failed or ended). */
    private readonly onClosed: (session: QueryStreamSession, error: GatewayError | undefined) => void,
    /** Takes the queries of a message back when the gateway has no QueryStream (UNIMPLEMENTED: none was run). */
    private readonly unimplemented: (queries: PendingQuery[], timeoutMs: number | undefined) => void,
  ) {
    this.#requests = createWritableIterable();
    this.#linger = setTimeout(() => this.#lingered(), STREAM_LINGER_MS);
    // The stream outlives the caller whose query opened it: its span is in no caller's trace (each query carries its own).
    void this.#read(outsideTraces(() => client.queryStream(this.#requests)));
  }

  /** Whether the gateway carries batches or transactions on this stream (known from its first response). */
  carries(what: "batches" | "transactions"): boolean {
    return this.#open && !this.#draining && this.#features?.[what] === true;
  }

  /** Whether the gateway behind this stream is shutting down: new work goes to another stream. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Queries and batches sent and not yet answered. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Sends queries and batches as one message (with the transaction messages waiting). */
  send(queries: readonly PendingQuery[], timeoutMs: number | undefined, batches: readonly PendingBatch[] = []): void {
    const count = queries.length + batches.length;
    const sent: Sent = { timeoutMs, unanswered: count, timer: undefined };
    for (const query of queries) this.#waiting.set(this.#numbered++, { query, sent });
    for (const batch of batches) this.#waiting.set(this.#numbered++, { batch, sent });
    this.#active();
    if (timeoutMs !== undefined && timeoutMs > 0) {
      const first = this.#numbered - count;
      sent.timer = setTimeout(() => this.#expire(first, count), timeoutMs);
    }
    const transactions = this.#frames.length > 0 ? this.#takeFrames() : undefined;
    this.#write({
      platform: this.platform,
      queries: toTenantQueries(queries),
      timeoutMs: timeoutMs ?? 0,
      batches: batches.length > 0 ? batches.map((b) => b.request) : undefined,
      transactions,
    });
  }

  /**
   * Opens a transaction on the stream: `listener` gets its answers, in order,
   * and `send` its messages (written with the next message, at the latest at
   * the end of the turn). `close` once it is over (its number is free again).
   */
  openTransaction(listener: StreamTransactionListener): { send(request: Frame["request"], timeoutMs?: number): void; close(): void } {
    const number = ++this.#transactionNumbers;
    this.#transactions.set(number, listener);
    this.#active();
    return {
      send: (request, timeoutMs) => {
        this.#frames.push({ transaction: BigInt(number), request, timeoutMs: timeoutMs ?? 0 });
        this.#lastActive = performance.now();
        if (!this.#framesScheduled) {
          this.#framesScheduled = true;
          // As the coalescer schedules queries: with nothing else in flight, at the end of this callback (no answer can
          // join them, and HTTP/2 sends what is written in the check phase only in the next iteration); otherwise in the
          // check phase, so that the messages of transactions resumed by one read leave together.
          if (this.#waiting.size === 0 && this.#transactions.size <= 1) queueMicrotask(() => process.nextTick(this.#flushFrames));
          else setImmediate(this.#flushFrames);
        }
      },
      close: () => {
        this.#transactions.delete(number);
        this.#lastActive = performance.now();
      },
    };
  }

  readonly #flushFrames = (): void => {
    this.#framesScheduled = false;
    if (this.#frames.length > 0) this.#write({ platform: this.platform, transactions: this.#takeFrames() });
  };

  #takeFrames(): Frame[] {
    const frames = this.#frames;
    this.#frames = [];
    return frames;
  }

  #write(message: MessageInitShape<typeof QueryStreamRequestSchema>): void {
    this.#requests.write(message).catch(() => undefined); // a stream that ended fails what waits in #read
  }

  #active(): void {
    this.#lastActive = performance.now();
    this.#linger ??= setTimeout(() => this.#lingered(), STREAM_LINGER_MS);
  }

  async #read(responses: AsyncIterable<QueryStreamResponse>): Promise<void> {
    let error: GatewayError | undefined;
    try {
      for await (const response of responses) {
        for (const answer of response.answers) {
          const number = Number(answer.query);
          const entry = this.#waiting.get(number);
          if (entry === undefined) continue; // past its deadline
          this.#settled(number, entry.sent);
          if (entry.query !== undefined) settle(entry.query, answer.outcome as BatchResult["outcome"]);
          else if (answer.outcome.case === "batch") entry.batch.resolve(answer.outcome.value);
          else if (answer.outcome.case === "error") entry.batch.reject(GatewayError.fromStatus(answer.outcome.value));
          else entry.batch.reject(noResult());
        }
        for (const answer of response.transactions) {
          const listener = this.#transactions.get(Number(answer.transaction));
          if (listener === undefined) continue; // an answer to a message of a transaction already over
          if (answer.kind.case === "failed") {
            this.#transactions.delete(Number(answer.transaction));
            const error = GatewayError.fromStatus(answer.kind.value);
            if (error.reason === "ROLLED_BACK_AT_SHUTDOWN") this.#draining = true;
            listener.fail(error);
          } else listener.answer(answer.kind.case === "response" ? answer.kind.value.kind : { case: undefined });
        }
        if (response.features !== undefined) this.#features = response.features;
        if (this.#waiting.size === 0) this.#lastActive = performance.now();
      }
    } catch (err) {
      error = GatewayError.from(err);
    }
    this.#close(error);
    const left = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const { sent } of left) clearTimeout(sent.timer);
    const transactions = [...this.#transactions.values()];
    this.#transactions.clear();
    const reason = error ?? noAnswer();
    for (const transaction of transactions) transaction.fail(reason);
    if (error?.code === Code.Unimplemented) {
      const bySent = new Map<Sent, PendingQuery[]>();
      for (const { query, batch, sent } of left) {
        if (batch !== undefined) {
          batch.fallback();
          continue;
        }
        const queries = bySent.get(sent);
        if (queries === undefined) bySent.set(sent, [query]);
        else queries.push(query);
      }
      for (const [sent, queries] of bySent) this.unimplemented(queries, sent.timeoutMs);
      return;
    }
    for (const { query, batch } of left) (query ?? batch).reject(reason);
  }

  #settled(number: number, sent: Sent): void {
    this.#waiting.delete(number);
    if (--sent.unanswered === 0) clearTimeout(sent.timer);
  }

  /**
   * A message's deadline passed: its queries and batches still waiting fail,
   * but for atomic batches. The gateway may have written one's COMMIT with its
   * statements, and answers with what PostgreSQL did (rolled back, committed,
   * or not known) within its grace period for cancels: that answer is awaited
   * for `ATOMIC_ANSWER_GRACE_MS` more.
   */
  #expire(first: number, count: number): void {
    const atomic: number[] = [];
    for (let number = first; number < first + count; number++) {
      const entry = this.#waiting.get(number);
      if (entry === undefined) continue;
      if (entry.batch?.request.atomic === true) {
        atomic.push(number);
        continue;
      }
      this.#settled(number, entry.sent);
      (entry.query ?? entry.batch).reject(new GatewayError("the query's deadline passed", Code.DeadlineExceeded, "DEADLINE_EXCEEDED", {}, undefined));
    }
    if (atomic.length === 0) return;
    const late = setTimeout(() => {
      for (const number of atomic) {
        const entry = this.#waiting.get(number);
        if (entry?.batch === undefined) continue;
        this.#settled(number, entry.sent);
        const message = "the batch's deadline passed, and the gateway did not say whether it committed";
        entry.batch.reject(new GatewayError(message, Code.DeadlineExceeded, "DEADLINE_EXCEEDED", {}, undefined));
      }
    }, ATOMIC_ANSWER_GRACE_MS);
    late.unref?.(); // the stream keeps the process alive while it waits for the answer
  }

  #lingered(): void {
    this.#linger = undefined;
    if (!this.#open) return;
    const idle = performance.now() - this.#lastActive;
    const busy = this.#waiting.size > 0 || this.#transactions.size > 0;
    if (!busy && idle >= STREAM_LINGER_MS) {
      this.#close(undefined);
      return;
    }
    this.#linger = setTimeout(() => this.#lingered(), busy ? STREAM_LINGER_MS : Math.max(1, STREAM_LINGER_MS - idle));
  }

  /** Takes no more queries; half-closes the stream (the gateway ends it once it has answered everything). */
  #close(error: GatewayError | undefined): void {
    if (!this.#open) return;
    this.#open = false;
    clearTimeout(this.#linger);
    if (this.#frames.length > 0) this.#flushFrames();
    this.#requests.close();
    this.onClosed(this, error);
  }
}

function noAnswer(): GatewayError {
  return new GatewayError("the gateway ended the query stream without answering the query", Code.Unavailable, "UNAVAILABLE", {}, undefined);
}
