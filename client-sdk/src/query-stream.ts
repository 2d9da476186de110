// The SDK's side of a platform's QueryStream: numbered queries sent in messages, each answer settling its query, the stream closed when idle.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createWritableIterable, type WritableIterable } from "@connectrpc/connect/protocol";
import type {
  BatchResult,
  QueryService,
  QueryStreamRequestSchema,
  QueryStreamResponse,
  TenantQuerySchema,
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

/** The queries of one message sent, for its deadline. */
interface Sent {
  readonly timeoutMs: number | undefined;
  unanswered: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** An open QueryStream is half-closed once it has had no query in flight for this long. */
export const STREAM_LINGER_MS = 500;

/**
 * One open QueryStream call of a platform: each `send` writes a message of
 * queries, numbered in the order sent as the gateway numbers them, and each
 * answer settles its query, whatever order the gateway answers in. The
 * callers answered first can send their next queries while the others are
 * still running, so the client's and the gateway's work overlap instead of
 * alternating, and a message costs no gRPC call.
 *
 * A query's timeout is kept here too (the gateway counts it from when it
 * reads the message): it fails with DEADLINE_EXCEEDED when it passes, and a
 * late answer is dropped. When the stream ends, the queries still waiting
 * fail with its error: UNAVAILABLE with `statement_sent: "false"` when the
 * gateway shut down (they were not run: the retry layer sends them again),
 * or the stream's error as a failed call's. Once nothing has been in flight
 * for `STREAM_LINGER_MS`, the stream is half-closed, so that an idle client
 * holds no call open (and a process can exit).
 */
export class QueryStreamSession {
  readonly #requests: WritableIterable<MessageInitShape<typeof QueryStreamRequestSchema>>;
  readonly #waiting = new Map<number, { query: PendingQuery; sent: Sent }>();
  #numbered = 0;
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
    // The stream outlives the caller whose query opened it: its span is in no caller's trace (each query carries its own).
    void this.#read(outsideTraces(() => client.queryStream(this.#requests)));
  }

  /** Sends queries as one message. */
  send(queries: readonly PendingQuery[], timeoutMs: number | undefined): void {
    const sent: Sent = { timeoutMs, unanswered: queries.length, timer: undefined };
    for (const query of queries) this.#waiting.set(this.#numbered++, { query, sent });
    this.#lastActive = performance.now();
    this.#linger ??= setTimeout(() => this.#lingered(), STREAM_LINGER_MS);
    if (timeoutMs !== undefined && timeoutMs > 0) {
      const first = this.#numbered - queries.length;
      sent.timer = setTimeout(() => this.#expire(first, queries.length), timeoutMs);
    }
    this.#requests.write({ platform: this.platform, queries: toTenantQueries(queries), timeoutMs: timeoutMs ?? 0 }).catch(() => undefined); // a stream that ended fails its queries in #read
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
          settle(entry.query, answer.outcome);
        }
        if (this.#waiting.size === 0) this.#lastActive = performance.now();
      }
    } catch (err) {
      error = GatewayError.from(err);
    }
    this.#close(error);
    const left = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const { sent } of left) clearTimeout(sent.timer);
    if (error?.code === Code.Unimplemented) {
      const bySent = new Map<Sent, PendingQuery[]>();
      for (const { query, sent } of left) {
        const queries = bySent.get(sent);
        if (queries === undefined) bySent.set(sent, [query]);
        else queries.push(query);
      }
      for (const [sent, queries] of bySent) this.unimplemented(queries, sent.timeoutMs);
      return;
    }
    const reason = error ?? noAnswer();
    for (const { query } of left) query.reject(reason);
  }

  #settled(number: number, sent: Sent): void {
    this.#waiting.delete(number);
    if (--sent.unanswered === 0) clearTimeout(sent.timer);
  }

  /** A message's deadline passed: its queries still waiting fail. */
  #expire(first: number, count: number): void {
    for (let number = first; number < first + count; number++) {
      const entry = this.#waiting.get(number);
      if (entry === undefined) continue;
      this.#settled(number, entry.sent);
      entry.query.reject(new GatewayError("the query's deadline passed", Code.DeadlineExceeded, "DEADLINE_EXCEEDED", {}, undefined));
    }
  }

  #lingered(): void {
    this.#linger = undefined;
    if (!this.#open) return;
    const idle = performance.now() - this.#lastActive;
    if (this.#waiting.size === 0 && idle >= STREAM_LINGER_MS) {
      this.#close(undefined);
      return;
    }
    this.#linger = setTimeout(() => this.#lingered(), this.#waiting.size > 0 ? STREAM_LINGER_MS : Math.max(1, STREAM_LINGER_MS - idle));
  }

  /** Takes no more queries; half-closes the stream (the gateway ends it once it has answered every query). */
  #close(error: GatewayError | undefined): void {
    if (!this.#open) return;
    this.#open = false;
    clearTimeout(this.#linger);
    this.#requests.close();
    this.onClosed(this, error);
  }
}

function noAnswer(): GatewayError {
  return new GatewayError("the gateway ended the query stream without answering the query", Code.Unavailable, "UNAVAILABLE", {}, undefined);
}
