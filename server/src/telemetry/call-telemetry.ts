// Observes every call for logs, metrics and traces: its request id, its server span, and one JSON log line at its end, never a secret.
import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Context, Span } from "@opentelemetry/api";
import { status as Status, type Metadata } from "@grpc/grpc-js";
import { DatabaseError } from "pg";
import { postgresErrorDetail, type GatewayError } from "../errors.js";
import type { Logger, LogLevel } from "./logger.js";
import type { GatewayMetrics } from "./metrics.js";
import { endServerSpan, startPartSpan, startServerSpan } from "./tracing.js";

/** The metadata key of the request id, read from the call and sent back in its response headers. */
export const REQUEST_ID_HEADER = "x-request-id";

/** A caller's request id is taken as is when it is 1 to 128 visible ASCII characters. */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** Refusals already logged: one error ends a QueryStream message's record and then the stream's. */
const loggedRefusals = new WeakSet<GatewayError>();

/** Reasons whose messages PostgreSQL wrote: they can quote parameter values, so they are never logged. */
const POSTGRES_MESSAGES = new Set(["QUERY_FAILED", "TRANSACTION_CONFLICT"]);

/**
 * Observes every call for the log, the metrics and the trace: a request id
 * (the caller's `x-request-id`, or a new one), the server span, and at the
 * end one JSON log line with the fields of seed 000's logging standard
 * (timestamp, request id, platform, operation, database, status, duration).
 * A call that carries several queries (QueryMany, a QueryStream message)
 * also tallies those that failed on their own (`query_errors`: reason,
 * SQLSTATE, count). Never a parameter, a key or a certificate: PostgreSQL's
 * error messages, which can quote values, are on the call's line as their
 * SQLSTATE only, and in full on a line of their own at the level the
 * operator chose (`failedStatements`, FAILED_STATEMENT_LOG_LEVEL). Refusals
 * (UNAUTHENTICATED, PERMISSION_DENIED) get a security line too: the peer,
 * its certificate, the principal, and what it asked for.
 */
export class CallTelemetry {
  /** Refusals, logged as `component: "auth"`. */
  readonly security: Logger;
  /** Failed statements' full errors, logged as `component: "statements"`. */
  readonly statements: Logger;

  constructor(
    readonly logger: Logger,
    readonly metrics: GatewayMetrics | undefined,
    /** The level of a failed statement's full error (off: not logged). */
    readonly failedStatements: LogLevel | "off" = "off",
  ) {
    this.security = logger.child({ component: "auth" });
    this.statements = logger.child({ component: "statements" });
  }

  /**
   * A call's record; with `stream`, the record of one part of that long-lived
   * stream (a QueryStream message): no stream of its own, and its span a
   * child of the stream's.
   */
  start(method: DescMethod, metadata: Metadata, stream?: CallRecord): CallRecord {
    return new CallRecord(method, metadata, this, stream);
  }
}

/** One call being observed. The handler tells it the platform and database once known. */
export class CallRecord {
  readonly requestId: string;
  platform = "";
  database = "";
  /** The caller's address and certificate subject, once known: for the security line of a refusal. */
  peer: { readonly address: string; readonly subject?: string | undefined } | undefined;
  /** What an unauthenticated call asked for, where its request says (its platform and tenant id): for the security line. */
  asked: { readonly platform: string; readonly tenantId: string } | undefined;
  /** Statements the call carried (one for Query and StreamQuery), for the statements counter. */
  statements = 0;
  readonly #started = process.hrtime.bigint();
  readonly #operation: string;
  readonly #method: DescMethod;
  readonly #span: Span | undefined;
  /** Counted as an open stream (a streaming call, not a part of one). */
  readonly #stream: boolean;
  /** The trace context to run the handler in (undefined when tracing is off). */
  readonly traceContext: Context | undefined;
  #ended = false;
  /** Counted among the open transactions: a Transaction call, or a transaction carried on a QueryStream (`countAsTransaction`). */
  #transaction: boolean;
  /** A stream whose work came in parts (QueryStream messages): its lifetime is no query's duration. */
  #parted = false;
  /** Queries of the call that failed on their own (QueryMany, a QueryStream message), by reason and SQLSTATE. */
  #queryErrors: Map<string, { reason: string; sqlstate?: string; count: number }> | undefined;

  readonly #telemetry: CallTelemetry;
  readonly #parent: CallRecord | undefined;

  constructor(method: DescMethod, metadata: Metadata, telemetry: CallTelemetry, stream: CallRecord | undefined) {
    this.#telemetry = telemetry;
    this.#parent = stream;
    const given = metadata.get(REQUEST_ID_HEADER)[0];
    this.requestId = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
    this.#method = method;
    this.#operation = `${method.parent.typeName}/${method.name}`;
    const traced =
      stream === undefined
        ? startServerSpan(method.parent.typeName, method.name, metadata)
        : stream.traceContext && startPartSpan(method.parent.typeName, method.name, stream.traceContext);
    this.#span = traced?.span;
    this.traceContext = traced?.context;
    this.#span?.setAttribute("db_gateway.request_id", this.requestId);
    if (stream !== undefined) stream.#parted = true;
    this.#stream = method.methodKind !== "unary" && stream === undefined;
    if (this.#stream) this.metrics?.openStreams.inc({ method: method.name });
    this.#transaction = method.name === "Transaction";
    if (this.#transaction) this.metrics?.openTransactions.inc();
  }

  /** Counts this part of a stream among the open transactions until it ends: a transaction the stream carries. */
  countAsTransaction(): void {
    if (this.#transaction) return;
    this.#transaction = true;
    this.metrics?.openTransactions.inc();
  }

  /**
   * A query of the call that failed on its own while the call went on (a
   * QueryMany query, or one of a QueryStream message): counted in the errors
   * metric as a failed call is, and tallied on the call's log line.
   */
  queryFailed(error: GatewayError, database?: string): void {
    this.metrics?.errors.inc({ type: error.reason });
    this.#logFailure(error, database);
    const sqlstate = error.metadata.sqlstate;
    const key = `${error.reason}/${sqlstate ?? ""}`;
    const tally = (this.#queryErrors ??= new Map()).get(key);
    if (tally !== undefined) tally.count++;
    else this.#queryErrors.set(key, sqlstate ? { reason: error.reason, sqlstate, count: 1 } : { reason: error.reason, count: 1 });
  }

  /** Tallies the queries among `outcomes` that failed on their own (see `queryFailed`); `databaseOf` names each one's database, for its log line. */
  tallyFailures(outcomes: readonly { readonly error?: GatewayError }[], databaseOf?: (index: number) => string): void {
    for (const [i, outcome] of outcomes.entries()) if (outcome.error !== undefined) this.queryFailed(outcome.error, databaseOf?.(i));
  }

  /** Tells the record the databases a call's queries went to: its log line names the one, or says how many. */
  setDatabases(databases: readonly string[]): void {
    this.database = databases.length === 1 ? databases[0]! : databases.length === 0 ? "" : `${databases.length} databases`;
  }

  private get metrics(): GatewayMetrics | undefined {
    return this.#telemetry.metrics;
  }

  private get logger(): Logger {
    return this.#telemetry.logger;
  }

  /** The security line of a refusal, or the full error of a failed statement at the operator's level. */
  #logFailure(error: GatewayError, database = this.database): void {
    if (error.reason === "UNAUTHENTICATED" || error.reason === "PERMISSION_DENIED") {
      if (loggedRefusals.has(error)) return;
      loggedRefusals.add(error);
      const event = error.logFields.event ?? (error.reason === "UNAUTHENTICATED" ? "unauthenticated" : "permission_denied");
      this.metrics?.authRefusals.inc({ event });
      // A part of a stream was admitted with the stream's peer.
      const peer = this.peer ?? this.#parent?.peer;
      this.#telemetry.security.warn(
        {
          event,
          request_id: this.requestId,
          operation: this.#operation,
          peer: peer?.address ?? null,
          subject: peer?.subject ?? null,
          principal: this.platform || null,
          platform: error.metadata.platform ?? this.asked?.platform ?? null,
          tenant_id: error.metadata.tenant_id ?? this.asked?.tenantId ?? null,
          database: database || null,
          ...error.logFields,
        },
        `refused: ${error.message}`,
      );
      return;
    }
    const level = this.#telemetry.failedStatements;
    // Not even made when the log would drop it (the default level, debug, under LOG_LEVEL=info).
    if (level === "off" || !(error.cause instanceof DatabaseError) || !this.#telemetry.statements.isLevelEnabled(level)) return;
    // Every field PostgreSQL sent, but the empty ones; never the parameters, which the error does not hold.
    const fields = Object.fromEntries(
      Object.entries(postgresErrorDetail(error.cause)).filter(([key, value]) => key !== "$typeName" && value !== "" && value !== 0),
    );
    this.#telemetry.statements[level](
      {
        request_id: this.requestId,
        operation: this.#operation,
        platform: this.platform,
        database,
        reason: error.reason,
        ...(error.metadata.statement_index === undefined ? {} : { statement_index: Number(error.metadata.statement_index) }),
        postgres: fields,
      },
      "statement failed",
    );
  }

  /** Ends the record once, with the call's outcome: the error, or none for OK. */
  end(error: GatewayError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    if (error !== undefined) this.#logFailure(error);
    const seconds = Number(process.hrtime.bigint() - this.#started) / 1e9;
    const code = error?.code ?? Status.OK;
    const method = this.#method.name;
    if (this.metrics !== undefined) {
      const labels = { platform: this.platform, method };
      this.metrics.queries.inc(labels);
      if (this.statements > 0) this.metrics.statements.inc(labels, this.statements);
      if (!this.#parted) this.metrics.duration.observe(labels, seconds);
      if (error !== undefined) this.metrics.errors.inc({ type: error.reason });
      if (error?.reason === "RATE_LIMITED") this.metrics.rateLimited.inc({ platform: this.platform });
      if (this.#stream) this.metrics.openStreams.dec({ method });
      if (this.#transaction) this.metrics.openTransactions.dec();
    }
    if (this.#span !== undefined) {
      if (this.database) this.#span.setAttribute("db.namespace", this.database);
      endServerSpan(this.#span, code, error?.reason);
    }
    const line: Record<string, unknown> = {
      request_id: this.requestId,
      platform: this.platform,
      operation: this.#operation,
      database: this.database,
      status: Status[code],
      duration_ms: Math.round(seconds * 1e6) / 1e3,
    };
    if (this.#queryErrors !== undefined) line.query_errors = [...this.#queryErrors.values()];
    if (error !== undefined) {
      line.reason = error.reason;
      if (error.metadata.sqlstate) line.sqlstate = error.metadata.sqlstate;
      if (!POSTGRES_MESSAGES.has(error.reason)) line.error = error.message;
    }
    if (code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS) this.logger.error(line, "call failed");
    else this.logger.info(line, "call");
  }
}
