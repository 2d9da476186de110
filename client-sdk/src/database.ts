// The SDK's handle of one database (a platform's main one or a tenant's): query, stream, batch, transaction and listen.
import type { Client } from "@connectrpc/connect";
import type { RetryOptions } from "./client-options.js";
import type { QueryCoalescer } from "./coalescer.js";
import type { QueryService } from "../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, GatewayError } from "./gateway-error.js";
import { decodeResult, durationMs, RowDecoder, type Field, type QueryResult, type RowMode } from "./result.js";
import { withRetries } from "./retry.js";
import { runTransactionOnce, streamTransaction, transactionCall, transactionOptions, type Transaction, type TransactionOptions } from "./transaction.js";
import type { TypeParser } from "./type-parsers.js";
import { CommitTokens } from "./commit-tokens.js";
import { rowByRow } from "./row-by-row.js";
import { toValue, type Param } from "./values.js";

/** Per-call options. */
export interface CallOptions {
  signal?: AbortSignal;
  /** The call's deadline (retries included); the gateway cancels its statement when it passes. */
  timeoutMs?: number;
  /**
   * The call may run twice without harm (a read, an upsert …): after
   * UNAVAILABLE it is retried even when it may have reached PostgreSQL.
   * Without it, only calls that certainly did not are retried.
   */
  idempotent?: boolean;
}

/** Where a read may be served: by a streaming replica of the tenant's cluster, seeing the writes a commit token names. */
export interface ReadOptions {
  /**
   * The statement only reads: the gateway may serve it from a streaming
   * replica whose lag is within its bound (else the primary), and it may be
   * retried like an idempotent call. Sent as a Query call of its own (not
   * coalesced). A statement that writes fails there (SQLSTATE 25006).
   */
  readOnly?: boolean;
  /**
   * With `readOnly`: a commit token (`QueryResult.commitToken`) of a write
   * the read must see. Default: the latest of this session's (`session()`),
   * or the client's with `readYourWrites`, for this database.
   */
  readAfter?: string;
}

/** Options of `query`. */
export interface QueryOptions extends CallOptions, ReadOptions {
  /** "array": each row as an array of values in column order, as with pg's `rowMode: "array"`. */
  rowMode?: RowMode;
  /**
   * Milliseconds the result may be served from, and kept in, the gateways'
   * shared result cache (a gateway with RESULT_CACHE=on; elsewhere it runs
   * as usual): keyed by database, SQL and parameters, ended by any write to
   * the database through the gateways. A read only (SELECT, VALUES, TABLE,
   * SHOW). Sent as a Query call of its own (not coalesced).
   */
  cacheTtlMs?: number;
}

/** A query as one object, as pg's `client.query({ text, values, rowMode })` takes it. */
export interface QueryConfig extends QueryOptions {
  text: string;
  values?: readonly Param[];
}

/** Options of `stream`: how the gateway cuts the result into messages (0 or absent: its defaults), and where it may be read. */
export interface StreamOptions extends CallOptions, ReadOptions {
  maxRowsPerMessage?: number;
  maxBytesPerMessage?: number;
}

/** The end of a streamed result. */
export interface StreamSummary {
  command: string;
  /** Rows returned or affected. */
  rowCount: number;
  executionTimeMs: number;
}

/**
 * Rows of a streamed result, read with `for await`. The gateway reads from
 * PostgreSQL only as fast as they are consumed; leaving the loop early
 * cancels the statement. A stream that ends without the gateway's summary
 * throws rather than look like a shorter result.
 */
export interface RowStream<Row> extends AsyncIterable<Row> {
  /**
   * The same rows in the groups the gateway sent them in (one array per
   * message, `maxRowsPerMessage` at most), for a reader that handles rows in
   * bulk as with pg-cursor's `read(n)`: one step of the loop per message
   * rather than per row. A stream is read once, by rows or by batches.
   */
  batches(): AsyncIterable<Row[]>;
  /** The columns, known once the first row (or the end) has arrived. */
  readonly fields: Field[];
  /** Set once the last rows have arrived. */
  readonly summary: StreamSummary | undefined;
}

/** A statement of a batch: SQL alone, or with parameters. */
export type BatchStatement = string | { sql: string; params?: readonly Param[] };

/** Options of `batch`. */
export interface BatchOptions extends CallOptions, TransactionOptions {
  /** All statements in one transaction: all commit, or the first error throws and none does. */
  atomic?: boolean;
}

/** Options of `transaction`. */
export interface TransactionCallOptions extends CallOptions, TransactionOptions {
  /** How often the callback runs at most when the transaction is ABORTED (serialization failure, deadlock). Default 3. */
  maxAttempts?: number;
}

/** A notification, or word that some may have been missed while the gateway reconnected. */
export type NotificationEvent = { type: "notification"; channel: string; payload: string; senderPid: number } | { type: "missed" };

/** Notifications of a `listen` call, read with `for await` until `close()`. */
export interface Subscription extends AsyncIterable<NotificationEvent> {
  close(): void;
}

/** One database: a platform's main database or a tenant's. */
export interface Database {
  /** Runs one parameterized statement; rows are objects keyed by column name. */
  query<Row extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: readonly Param[],
    options?: QueryOptions & { rowMode?: undefined },
  ): Promise<QueryResult<Row>>;
  /** Runs one parameterized statement; rows are arrays of values in column order. */
  query<Row extends unknown[] = unknown[]>(
    sql: string,
    params: readonly Param[] | undefined,
    options: QueryOptions & { rowMode: "array" },
  ): Promise<QueryResult<Row>>;
  /** pg's object form: `{ text, values, rowMode }`. */
  query<Row extends Record<string, unknown> = Record<string, unknown>>(config: QueryConfig & { rowMode?: undefined }): Promise<QueryResult<Row>>;
  query<Row extends unknown[] = unknown[]>(config: QueryConfig & { rowMode: "array" }): Promise<QueryResult<Row>>;
  /** Runs one statement and streams its rows. */
  stream<Row extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: readonly Param[], options?: StreamOptions): RowStream<Row>;
  /**
   * Runs several statements in one call. Independent (default): each commits
   * on its own and its entry is its result or its GatewayError. Atomic: one
   * transaction; the first error throws (its `metadata.statement_index` names
   * the statement) and nothing commits.
   */
  batch(statements: readonly BatchStatement[], options?: BatchOptions): Promise<(QueryResult<Record<string, unknown>> | GatewayError)[]>;
  /**
   * Runs `fn` in an interactive transaction: committed when it returns,
   * rolled back when it throws. On ABORTED (serialization failure, deadlock)
   * the whole callback runs again, up to `maxAttempts` times. `fn` starts at
   * once: its first statement goes with the begin, without waiting for the
   * gateway's answer to it, and a begin that fails (an unknown tenant, no
   * connection) fails that statement and the transaction.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionCallOptions): Promise<T>;
  /** Subscribes to NOTIFY on the channels; resolves once the gateway listens on all of them. */
  listen(channels: string | readonly string[], options?: CallOptions): Promise<Subscription>;
  /**
   * The same database with commit tokens of its own: its writes' tokens are
   * kept, and its read-only reads and transactions carry the latest
   * (read-your-writes for this session, whatever the client does). Cheap: no
   * connection of its own.
   */
  session(): Database;
}

/** What every database handle of one client shares. */
export interface DatabaseContext {
  client: Client<typeof QueryService>;
  parserFor: (oid: number) => TypeParser;
  retry: Required<RetryOptions>;
  /** The client's default deadline. */
  timeoutMs: number | undefined;
  /** Coalesces concurrent queries (absent when the client turned it off). */
  coalescer: QueryCoalescer | undefined;
  /** The commit tokens kept (the client's with `readYourWrites`, or a session's); undefined: none kept. */
  tokens: CommitTokens | undefined;
}

/** What each handle was made from, for `withTypeParsers`. */
const origins = new WeakMap<Database, { context: DatabaseContext; target: { platform: string; tenantId: string } }>();

/**
 * The same database, on the same connection, with rows decoded by
 * `parserFor` instead of the client's parsers: for the integrations whose
 * libraries expect pg's own values (or PostgreSQL's text) rather than the
 * SDK's. Cheap: no call, no connection.
 */
export function withTypeParsers(database: Database, parserFor: (oid: number) => TypeParser): Database {
  const origin = origins.get(database);
  if (origin === undefined) throw new TypeError("not a database handle of this SDK (gateway.platform(p) or gateway.platform(p).tenant(t))");
  return createDatabase({ ...origin.context, parserFor }, origin.target);
}

/** The handle of one database, over the QueryService client. */
export function createDatabase(context: DatabaseContext, target: { platform: string; tenantId: string }): Database {
  const database = databaseOver(context, target);
  origins.set(database, { context, target });
  return database;
}

function databaseOver(context: DatabaseContext, target: { platform: string; tenantId: string }): Database {
  const { client, parserFor } = context;
  /** A unary call with the client's default deadline and safe retries; errors become GatewayErrors. */
  const call = <T>(fn: (options: CallOptions) => Promise<T>, options: CallOptions): Promise<T> => {
    const timeoutMs = options.timeoutMs ?? context.timeoutMs;
    return withRetries((t) => fn({ ...options, timeoutMs: t }), context.retry, { ...options, timeoutMs });
  };
  const key = `${target.platform}/${target.tenantId}`;
  const { tokens } = context;
  /** What a read sends of where it may run; with tokens kept, every query goes as its own Query call, so that writes answer with theirs. */
  const readRequest = (options: ReadOptions) => {
    const readOnly = options.readOnly === true;
    return { readOnly, readAfter: options.readAfter ?? (readOnly ? (tokens?.latest(key) ?? "") : "") };
  };
  return {
    query(first: string | QueryConfig, params?: readonly Param[], options?: QueryOptions) {
      const { text, values, ...rest } = typeof first === "string" ? { text: first, values: params, ...options } : first;
      const bound = (values ?? []).map(toValue);
      const read = readRequest(rest);
      const cacheTtlMs = rest.cacheTtlMs ?? 0;
      const coalescer = read.readOnly || read.readAfter !== "" || tokens !== undefined || cacheTtlMs > 0 ? undefined : context.coalescer;
      return call(
        async (o) => {
          if (coalescer !== undefined && o.signal === undefined)
            return decodeResult(await coalescer.query(target, text, bound, o.timeoutMs), parserFor, rest.rowMode);
          const response = await client.query({ ...target, sql: text, params: bound, ...read, cacheTtlMs }, o);
          const result = decodeResult(response.result, parserFor, rest.rowMode);
          if (response.fromCache) result.fromCache = true;
          if (response.commitToken !== "") {
            tokens?.note(key, response.commitToken);
            result.commitToken = response.commitToken;
          }
          return result;
        },
        { ...rest, idempotent: rest.idempotent ?? (read.readOnly || cacheTtlMs > 0) },
      );
    },

    stream<Row extends Record<string, unknown>>(sql: string, params: readonly Param[] = [], options: StreamOptions = {}): RowStream<Row> {
      let decoder: RowDecoder | undefined;
      let summary: StreamSummary | undefined;
      let started = false;
      const request = {
        ...target,
        sql,
        params: params.map(toValue),
        maxRowsPerMessage: options.maxRowsPerMessage ?? 0,
        maxBytesPerMessage: options.maxBytesPerMessage ?? 0,
        ...readRequest(options),
      };
      return {
        get fields() {
          return decoder?.fields ?? [];
        },
        get summary() {
          return summary;
        },
        [Symbol.asyncIterator]() {
          return rowByRow(this.batches());
        },
        async *batches() {
          if (started) throw new TypeError("a row stream can be read only once");
          const timeoutMs = options.timeoutMs ?? context.timeoutMs;
          started = true;
          // Connect's stream iterable ignores return(): leaving the loop early must abort the call itself.
          const abort = new AbortController();
          const onAbort = () => abort.abort(options.signal?.reason);
          if (options.signal?.aborted) onAbort();
          options.signal?.addEventListener("abort", onAbort, { once: true });
          try {
            for await (const message of client.streamQuery(request, { timeoutMs, signal: abort.signal })) {
              const rowDecoder = (decoder ??= new RowDecoder(message.columns, parserFor));
              const rows = rowDecoder.rowsOf<Row>(message);
              if (message.summary !== undefined) {
                const s = message.summary;
                summary = { command: s.command, rowCount: Number(s.rowsAffected), executionTimeMs: durationMs(s.executionTime) };
              }
              if (rows.length > 0) yield rows;
            }
          } catch (err) {
            throw GatewayError.from(err);
          } finally {
            options.signal?.removeEventListener("abort", onAbort);
            abort.abort();
          }
          if (summary === undefined) throw new GatewayError("the result stream ended before its summary", Code.DataLoss, "STREAM_INCOMPLETE", {}, undefined);
        },
      };
    },

    batch(statements: readonly BatchStatement[], options: BatchOptions = {}) {
      const request = {
        ...target,
        statements: statements.map((s) => (typeof s === "string" ? { sql: s } : { sql: s.sql, params: (s.params ?? []).map(toValue) })),
        atomic: options.atomic ?? false,
        transactionOptions: transactionOptions(options),
      };
      const { coalescer } = context;
      return call(async (o) => {
        // Over the platform's QueryStream, with this turn's queries, when it carries batches; a batch with a signal is a call of its own.
        const response = await ((o.signal === undefined ? coalescer?.batch(request, o.timeoutMs) : undefined) ?? client.batch(request, o));
        return response.results.map((r) =>
          r.outcome.case === "error" ? GatewayError.fromStatus(r.outcome.value) : decodeResult<Record<string, unknown>>(r.outcome.value, parserFor),
        );
      }, options);
    },

    async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionCallOptions = {}): Promise<T> {
      const attempts = options.maxAttempts ?? 3;
      for (let attempt = 1; ; attempt++) {
        try {
          const timeoutMs = options.timeoutMs ?? context.timeoutMs;
          // Over the platform's QueryStream when it carries transactions; a transaction with a signal has a call of its own, which the signal cancels.
          const session = options.signal === undefined ? context.coalescer?.transactions(target.platform) : undefined;
          const channel = session !== undefined ? streamTransaction(session, timeoutMs) : transactionCall(client, { signal: options.signal, timeoutMs });
          const readAfter = options.readAfter ?? (options.readOnly === true ? (tokens?.latest(key) ?? "") : "");
          return await runTransactionOnce(channel, target, fn, { ...options, readAfter }, parserFor, (token) => tokens?.note(key, token));
        } catch (err) {
          const error = GatewayError.from(err);
          // ABORTED: rolled back, run it again; UNAVAILABLE before anything was sent (a gateway shutting down): nothing ran.
          const again = error.code === Code.Aborted || (error.code === Code.Unavailable && error.notSent && error.reason !== "COMMIT_OUTCOME_UNKNOWN");
          if (!again || attempt >= attempts || options.signal?.aborted) throw error;
          await new Promise((resolve) => setTimeout(resolve, 10 * 2 ** attempt * Math.random()));
        }
      }
    },

    async listen(channels: string | readonly string[], options: CallOptions = {}): Promise<Subscription> {
      const abort = new AbortController();
      const onAbort = () => abort.abort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const close = () => {
        options.signal?.removeEventListener("abort", onAbort);
        abort.abort();
      };
      const responses = client.listen(
        { ...target, channels: typeof channels === "string" ? [channels] : [...channels] },
        { timeoutMs: options.timeoutMs, signal: abort.signal },
      );
      const iterator = responses[Symbol.asyncIterator]();
      try {
        const first = await iterator.next();
        if (first.done || first.value.kind.case !== "started")
          throw new GatewayError("the gateway did not start listening", Code.Internal, "INTERNAL", {}, undefined);
      } catch (err) {
        close();
        throw GatewayError.from(err);
      }
      return {
        close,
        async *[Symbol.asyncIterator]() {
          try {
            for (;;) {
              const next = await iterator.next();
              if (next.done) return;
              const kind = next.value.kind;
              if (kind.case === "notification")
                yield { type: "notification", channel: kind.value.channel, payload: kind.value.payload, senderPid: kind.value.senderPid };
              else if (kind.case === "missed") yield { type: "missed" };
            }
          } catch (err) {
            if (abort.signal.aborted) return;
            throw GatewayError.from(err);
          } finally {
            close();
          }
        },
      };
    },

    session: () => createDatabase({ ...context, tokens: new CommitTokens() }, target),
  };
}
