// Coalesces one turn's queries of a platform into one QueryStream message or QueryMany call, each query still run as its own.
import type { Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BatchRequestSchema, BatchResponse, QueryService } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { ResultSet, Value } from "../../wire/src/gen/dbgateway/v1/values_pb.js";
import { Code, GatewayError } from "./gateway-error.js";
import { noResult, QueryStreamSession, settle, toTenantQueries, type PendingBatch, type PendingQuery } from "./query-stream.js";
import { callerContext, runInCallerContext, traceContextLookedFor, traceContextReady } from "./trace-context.js";

/** The most queries one coalesced call carries. */
export const MAX_QUERIES_PER_CALL = 64;

interface Group {
  readonly platform: string;
  readonly timeoutMs: number | undefined;
  readonly queries: PendingQuery[];
  readonly batches: PendingBatch[];
}

/**
 * Coalesces concurrent queries into one message or call. Queries made in the
 * same turn of the event loop (say, by 64 request handlers resumed by the
 * same network read) for the same platform and with the same timeout,
 * whatever their tenants, are sent together at the end of that turn (when no
 * query is unanswered, at the end of the callback that made them: see
 * `query`), and the
 * gateway runs each exactly as a Query call of its own: its own implicit
 * transaction, no session state shared, its own result or error. What it
 * saves is the per-call cost of gRPC on both sides, and round trips to
 * PostgreSQL (the gateway pipelines queries to one database).
 *
 * They go over the platform's QueryStream to a gateway (`QueryStreamSession`; one per gateway, each message to the gateway the client's balancer picks), a message
 * per turn (up to `MAX_QUERIES_PER_CALL` queries each), a lone query too:
 * each query is answered as soon as its connection's share is done, so the
 * callers answered first send their next queries while the rest still run,
 * and a message costs no call (for a lone query: no HTTP/2 stream, headers or
 * trailers, which BENCHMARKS.md shows at concurrency 1). The stream is opened by the first query and half-closed
 * once idle. With
 * `queryStream: false`, or a gateway without QueryStream, a turn's queries go
 * as one QueryMany call, or a lone one as a Query call. Each query carries
 * its caller's trace context, so its span on the gateway is in its caller's
 * trace whichever call carried it.
 *
 * Calls with an AbortSignal are not coalesced (sent at once as Query): a
 * cancelled QueryMany would cancel its neighbours too.
 */
export class QueryCoalescer {
  readonly #groups = new Map<string, Group>();
  /** Each platform's open QueryStream to each gateway, by `${gateway}/${platform}`. */
  readonly #sessions = new Map<string, QueryStreamSession>();
  /** Until the gateway answers QueryStream with UNIMPLEMENTED. */
  #streams: boolean;
  #scheduled = false;
  /** Query and QueryMany calls sent and not yet answered. */
  #calls = 0;

  /**
   * With `streams` false, a turn's queries go as one QueryMany call (not over
   * a QueryStream). `client` balances its calls over the gateways; a
   * platform's QueryStreams are one per gateway, over `gateways.clients`
   * (each bound to its gateway), and each message goes to the one
   * `gateways.pick()` names, so that a busy platform's queries are balanced
   * as its calls are.
   */
  constructor(
    private readonly client: Client<typeof QueryService>,
    streams = true,
    private readonly gateways: { clients: readonly Client<typeof QueryService>[]; pick(): number } = { clients: [client], pick: () => 0 },
  ) {
    this.#streams = streams;
  }

  /** Runs one query, with others of this turn when there are any. */
  query(target: { platform: string; tenantId: string }, sql: string, params: Value[], timeoutMs: number | undefined): Promise<ResultSet> {
    // A query made as the process starts waits for @opentelemetry/api to be looked for, to keep its caller's context.
    if (!traceContextLookedFor()) return traceContextReady.then(() => this.query(target, sql, params, timeoutMs));
    const queries = this.#group(target.platform, timeoutMs).queries;
    return new Promise<ResultSet>((resolve, reject) => queries.push({ tenantId: target.tenantId, sql, params, caller: callerContext(), resolve, reject }));
  }

  /**
   * Runs a batch over the platform's QueryStream, with this turn's queries,
   * when the stream carries batches; otherwise undefined (the caller makes a
   * Batch call), and a stream is opened for the next ones.
   */
  batch(request: MessageInitShape<typeof BatchRequestSchema> & { platform: string }, timeoutMs: number | undefined): Promise<BatchResponse> | undefined {
    if (!this.#session(request.platform)?.carries("batches")) return undefined;
    const batches = this.#group(request.platform, timeoutMs).batches;
    return new Promise<BatchResponse>((resolve, reject) =>
      batches.push({
        request,
        resolve,
        reject,
        fallback: () => this.client.batch(request, { timeoutMs }).then(resolve, reject),
      }),
    );
  }

  /** The platform's QueryStream when it carries transactions; otherwise undefined (the caller makes a Transaction call), and a stream is opened for the next ones. */
  transactions(platform: string): QueryStreamSession | undefined {
    const session = this.#session(platform);
    return session?.carries("transactions") ? session : undefined;
  }

  /** This turn's group of a platform and timeout, to be sent at the end of the turn. */
  #group(platform: string, timeoutMs: number | undefined): Group {
    const key = `${platform}/${timeoutMs ?? ""}`;
    let group = this.#groups.get(key);
    if (group === undefined) {
      group = { platform, timeoutMs, queries: [], batches: [] };
      this.#groups.set(key, group);
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      // With queries unanswered, the turn's queries wait for the loop's check phase, by when every answer read in this
      // iteration has resumed its callers, to share their message. With none (a lone caller, or callers that await each
      // query before the next), no answer can join them, and they leave at the end of this callback, once its ticks and
      // promise reactions have run: HTTP/2 sends what is written in the check phase only in the loop's next iteration.
      if (this.#idle()) queueMicrotask(() => process.nextTick(() => this.#flush()));
      else setImmediate(() => this.#flush());
    }
    return group;
  }

  /** No query sent is still unanswered. */
  #idle(): boolean {
    if (this.#calls > 0) return false;
    for (const session of this.#sessions.values()) if (session.waiting > 0) return false;
    return true;
  }

  #flush(): void {
    this.#scheduled = false;
    const groups = [...this.#groups.values()];
    this.#groups.clear();
    for (const group of groups) {
      // At most MAX_QUERIES_PER_CALL queries and batches a message: the queries first, batches filling the last one's room.
      const { queries, batches } = group;
      const total = queries.length + batches.length;
      for (let i = 0; i < total; i += MAX_QUERIES_PER_CALL) {
        const end = i + MAX_QUERIES_PER_CALL;
        const batchesOf = batches.length === 0 ? batches : batches.slice(Math.max(0, i - queries.length), Math.max(0, end - queries.length));
        this.#send(group, queries.slice(i, Math.min(end, queries.length)), batchesOf);
      }
    }
  }

  /** The platform's open QueryStream to the next gateway, opened if need be (undefined once a gateway has shown it has none). */
  #session(platform: string): QueryStreamSession | undefined {
    if (!this.#streams) return undefined;
    const gateway = this.gateways.pick();
    const key = `${gateway}/${platform}`;
    let session = this.#sessions.get(key);
    // A stream whose gateway is shutting down finishes what it carries; new work goes to a new one.
    if (session === undefined || session.draining) {
      session = new QueryStreamSession(
        this.gateways.clients[gateway]!,
        platform,
        (closed, error) => {
          if (this.#sessions.get(key) === closed) this.#sessions.delete(key);
          if (error?.code === Code.Unimplemented) this.#streams = false;
        },
        (unanswered, timeout) => this.#send({ platform, timeoutMs: timeout, queries: unanswered, batches: [] }, unanswered, []),
      );
      this.#sessions.set(key, session);
    }
    return session;
  }

  #send(group: Group, queries: PendingQuery[], batches: PendingBatch[]): void {
    const { platform, timeoutMs } = group;
    const session = this.#session(platform);
    if (batches.length > 0 && !session?.carries("batches")) {
      for (const batch of batches) batch.fallback();
      batches = [];
    }
    if (queries.length === 0 && batches.length === 0) return;
    if (session !== undefined) {
      session.send(queries, timeoutMs, batches);
      return;
    }
    this.#calls++;
    if (queries.length === 1) {
      const [q] = queries as [PendingQuery];
      runInCallerContext(q.caller, () => this.client.query({ platform, tenantId: q.tenantId, sql: q.sql, params: q.params }, { timeoutMs })).then(
        (response) => {
          this.#calls--;
          if (response.result === undefined) q.reject(noResult());
          else q.resolve(response.result);
        },
        (err: unknown) => {
          this.#calls--;
          q.reject(err);
        },
      );
      return;
    }
    // The call's own span is in its first query's caller's trace; each query carries its own caller's.
    runInCallerContext(queries[0]!.caller, () => this.client.queryMany({ platform, queries: toTenantQueries(queries) }, { timeoutMs })).then(
      (response) => {
        this.#calls--;
        for (const [i, q] of queries.entries()) settle(q, response.results[i]?.outcome);
      },
      (err: unknown) => {
        this.#calls--;
        // A gateway from before QueryMany: one Query call each.
        if (GatewayError.from(err).code === Code.Unimplemented) for (const q of queries) this.#send(group, [q], []);
        else for (const q of queries) q.reject(err);
      },
    );
  }
}
