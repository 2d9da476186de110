// The gateway's one error type and its catalogue of reasons, each with its gRPC status, and other errors converted to it (client-errors.ts sends them).
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { status as Status } from "@grpc/grpc-js";
import { DatabaseError } from "pg";
import { PostgresErrorSchema, StatementLocationSchema, type PostgresError } from "../../wire/src/gen/dbgateway/v1/errors_pb.js";
import { RetryInfoSchema } from "../../wire/src/gen/google/rpc/error_details_pb.js";

/** The `domain` of every `google.rpc.ErrorInfo` the gateway sends. */
export const ERROR_DOMAIN = "dbgateway";

/**
 * The catalogue of error reasons: each has one gRPC status code. The reason is
 * the stable, machine-readable string sent in `google.rpc.ErrorInfo.reason`;
 * messages are for people and may change.
 */
export const Reason = {
  /** Missing, unknown or malformed API key. Says nothing about which. */
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  /** A valid key used for another platform, or a platform key on AdminService. */
  PERMISSION_DENIED: Status.PERMISSION_DENIED,
  INVALID_PLATFORM: Status.INVALID_ARGUMENT,
  INVALID_TENANT_ID: Status.INVALID_ARGUMENT,
  INVALID_TEMPLATE: Status.INVALID_ARGUMENT,
  INVALID_PARAMETER: Status.INVALID_ARGUMENT,
  INVALID_REQUEST: Status.INVALID_ARGUMENT,
  DATABASE_NOT_FOUND: Status.NOT_FOUND,
  /** AdminService on a platform that has no API key configured. */
  PLATFORM_NOT_FOUND: Status.NOT_FOUND,
  TEMPLATE_NOT_FOUND: Status.NOT_FOUND,
  DATABASE_EXISTS: Status.ALREADY_EXISTS,
  TEMPLATE_IN_USE: Status.FAILED_PRECONDITION,
  /** CreateTenant named a cluster the settings do not define. */
  CLUSTER_NOT_FOUND: Status.NOT_FOUND,
  /** Every cluster the placement could pick holds its capacity of tenants (CLUSTER_CAPACITY_<NAME>). */
  CLUSTERS_FULL: Status.RESOURCE_EXHAUSTED,
  /** CreateTenant named a cluster other than its template's: a database is copied within one server only. */
  TEMPLATE_ON_OTHER_CLUSTER: Status.FAILED_PRECONDITION,
  /** MoveTenant named the cluster that already serves the tenant. */
  MOVE_TO_SAME_CLUSTER: Status.FAILED_PRECONDITION,
  /** A move cannot run: wal_level is not logical on the source, an administrative role is not a superuser, a table has no replica identity. */
  MOVE_NOT_POSSIBLE: Status.FAILED_PRECONDITION,
  /** Another MoveTenant of the same tenant runs (on this or another gateway instance). */
  MOVE_IN_PROGRESS: Status.ABORTED,
  /** The target did not catch up within the move's longest pause: the tenant stays on its source, serving; run the move again. */
  MOVE_PAUSE_EXCEEDED: Status.ABORTED,
  /** The tenant moved to another cluster while the call waited for a connection: it was not run; try again. */
  TENANT_MOVED: Status.UNAVAILABLE,
  /** No connection became free within the acquire timeout or the call's deadline. */
  POOL_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  /** Too many calls were already waiting for a connection to this database. */
  TOO_MANY_WAITERS: Status.RESOURCE_EXHAUSTED,
  /** The platform or the tenant is over its calls per second (RATE_LIMIT_PER_SEC, or its quota); a RetryInfo says when to try again. */
  RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
  /** The platform or the tenant has as many statements running as its quota allows (metadata `limit`, `scope`); a RetryInfo says when to try again. */
  QUOTA_EXCEEDED: Status.RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
  CANCELLED: Status.CANCELLED,
  /** A role the gateway would create exists already and is not one of the gateway's. */
  ROLE_CONFLICT: Status.FAILED_PRECONDITION,
  /** A Migrate call's migrations are malformed (version, name, duplicates, empty SQL). */
  INVALID_MIGRATION: Status.INVALID_ARGUMENT,
  /** A database's record of its migrations disagrees with the migrations given: it was not touched. */
  MIGRATION_DRIFT: Status.FAILED_PRECONDITION,
  /** The bookkeeping schema `dbgateway` of a database exists and is not the gateway's. */
  MIGRATION_SCHEMA_CONFLICT: Status.FAILED_PRECONDITION,
  /** pg_dump or pg_restore is missing, or older than the server (BACKUP_DIR, PG_BIN_DIR). */
  BACKUP_TOOLS_UNAVAILABLE: Status.FAILED_PRECONDITION,
  /** No BACKUP_DIR is set, or it cannot be written. */
  BACKUP_DIR_UNWRITABLE: Status.FAILED_PRECONDITION,
  BACKUP_NOT_FOUND: Status.NOT_FOUND,
  /** A backup file does not match its manifest's checksum. */
  BACKUP_CORRUPT: Status.DATA_LOSS,
  /** pg_dump or pg_restore failed: its message says why. */
  BACKUP_FAILED: Status.INTERNAL,
  /** PostgreSQL rejected the statement; the code comes from its SQLSTATE. */
  QUERY_FAILED: Status.UNKNOWN,
  /**
   * A serialization failure (40001) or deadlock (40P01): the transaction was
   * rolled back and running it again from the start may well succeed.
   */
  TRANSACTION_CONFLICT: Status.ABORTED,
  /** COMMIT of a transaction in which a statement had failed: it was rolled back instead. */
  TRANSACTION_ABORTED: Status.FAILED_PRECONDITION,
  /** The client sent nothing for longer than the idle-in-transaction timeout: rolled back. */
  TRANSACTION_IDLE_TIMEOUT: Status.ABORTED,
  /** A statement ended the transaction itself (COMMIT, ROLLBACK …): use the stream's commit and rollback. */
  TRANSACTION_ENDED_BY_STATEMENT: Status.FAILED_PRECONDITION,
  /** A QueryStream message for a transaction of the stream that is not open (never begun, or ended). */
  TRANSACTION_NOT_OPEN: Status.FAILED_PRECONDITION,
  /** The connection broke after COMMIT was sent: the transaction may or may not have committed. */
  COMMIT_OUTCOME_UNKNOWN: Status.UNAVAILABLE,
  INVALID_CHANNEL: Status.INVALID_ARGUMENT,
  /** A Listen subscriber did not read its notifications fast enough; it was disconnected. */
  SUBSCRIBER_TOO_SLOW: Status.RESOURCE_EXHAUSTED,
  /** A buffered result grew past MAX_RESULT_ROWS or MAX_RESULT_BYTES: StreamQuery reads it. Its statement was stopped. */
  RESULT_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
  /** The gateway's budget for buffered results (MAX_BUFFERED_RESULT_BYTES) had no room for a result; a RetryInfo says when to try again. */
  RESULT_MEMORY_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  /** PostgreSQL could not be reached, or the connection broke. */
  DATABASE_UNAVAILABLE: Status.UNAVAILABLE,
  /**
   * The gateway is shutting down: a call refused (or a QueryStream's queries
   * without an answer) was not run (`statement_sent: "false"`); one stopped
   * when the shutdown's grace period ended may have run (`statement_sent: "true"`).
   */
  SHUTTING_DOWN: Status.UNAVAILABLE,
  /** An interactive transaction still open when the shutdown's grace period ended: rolled back, nothing of it committed. */
  ROLLED_BACK_AT_SHUTDOWN: Status.ABORTED,
  NOT_IMPLEMENTED: Status.UNIMPLEMENTED,
  INTERNAL: Status.INTERNAL,
} as const satisfies Record<string, Status>;

export type ReasonCode = keyof typeof Reason;

/**
 * The one error type of the gateway: a stable reason, a gRPC status code, a
 * message safe to show to the caller, and optional `ErrorInfo` metadata and
 * extra status details. Every foreign error becomes one in `toGatewayError`.
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";
  readonly code: Status;
  readonly metadata: Readonly<Record<string, string>>;
  readonly details: ReadonlyArray<DetailMessage>;
  /** Facts for the server's log only (see `GatewayErrorOptions.logFields`). */
  readonly logFields: Readonly<Record<string, string>>;

  constructor(
    readonly reason: ReasonCode,
    message: string,
    options: GatewayErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.code = options.code ?? Reason[reason];
    this.metadata = options.metadata ?? {};
    this.details = options.details ?? [];
    this.logFields = options.logFields ?? {};
  }
}

/** The optional parts of a GatewayError. */
export interface GatewayErrorOptions {
  /** `ErrorInfo.metadata`: short, non-secret facts such as the database or the SQLSTATE. */
  metadata?: Record<string, string>;
  /** Extra messages for `google.rpc.Status.details`, after the ErrorInfo. */
  details?: ReadonlyArray<DetailMessage>;
  /** Overrides the reason's code (QUERY_FAILED takes its code from the SQLSTATE). */
  code?: Status;
  /** The foreign error this one stands for: logged, never sent. */
  cause?: unknown;
  /** Facts for the server's log that the caller is not told (the certificate identity a refusal expected, say). */
  logFields?: Record<string, string>;
}

/** A protobuf message with its schema, to be packed into `google.rpc.Status.details`. */
export interface DetailMessage<Desc extends DescMessage = DescMessage> {
  schema: Desc;
  message: MessageShape<Desc>;
}

/**
 * How each SQLSTATE (or its two-character class) maps to a gRPC status code.
 * Exact codes are looked up first, then the class; anything else is UNKNOWN.
 */
const SQLSTATE_CODES: ReadonlyMap<string, Status> = new Map([
  ["23505", Status.ALREADY_EXISTS], // unique_violation
  ["40001", Status.ABORTED], // serialization_failure
  ["40P01", Status.ABORTED], // deadlock_detected
  ["55P03", Status.ABORTED], // lock_not_available
  ["57014", Status.CANCELLED], // query_canceled
  ["42501", Status.PERMISSION_DENIED], // insufficient_privilege
  ["3D000", Status.NOT_FOUND], // invalid_catalog_name
  ["53300", Status.RESOURCE_EXHAUSTED], // too_many_connections
  ["57P01", Status.UNAVAILABLE], // admin_shutdown
  ["57P02", Status.UNAVAILABLE], // crash_shutdown
  ["57P03", Status.UNAVAILABLE], // cannot_connect_now
  ["XX000", Status.INTERNAL], // internal_error
  // classes
  ["08", Status.UNAVAILABLE], // connection exception
  ["0A", Status.UNIMPLEMENTED], // feature not supported
  ["21", Status.INVALID_ARGUMENT], // cardinality violation
  ["22", Status.INVALID_ARGUMENT], // data exception
  ["23", Status.FAILED_PRECONDITION], // integrity constraint violation
  ["25", Status.FAILED_PRECONDITION], // invalid transaction state
  ["26", Status.INVALID_ARGUMENT], // invalid SQL statement name
  ["28", Status.PERMISSION_DENIED], // invalid authorization specification
  ["2B", Status.FAILED_PRECONDITION], // dependent privilege descriptors still exist
  ["34", Status.INVALID_ARGUMENT], // invalid cursor name
  ["3F", Status.NOT_FOUND], // invalid schema name
  ["40", Status.ABORTED], // transaction rollback
  ["42", Status.INVALID_ARGUMENT], // syntax error or access rule violation
  ["44", Status.FAILED_PRECONDITION], // WITH CHECK OPTION violation
  ["53", Status.RESOURCE_EXHAUSTED], // insufficient resources
  ["54", Status.INVALID_ARGUMENT], // program limit exceeded
  ["55", Status.FAILED_PRECONDITION], // object not in prerequisite state
  ["57", Status.UNAVAILABLE], // operator intervention
  ["58", Status.INTERNAL], // system error
  ["P0", Status.FAILED_PRECONDITION], // PL/pgSQL raise_exception and friends
  ["XX", Status.INTERNAL], // internal error
]);

/**
 * The gRPC status code for a PostgreSQL SQLSTATE. A 57014 (query_canceled)
 * caused by `statement_timeout` is DEADLINE_EXCEEDED; any other is CANCELLED.
 * The cause is only told by the message, so a server with translated messages
 * reports every 57014 as CANCELLED.
 */
export function statusForSqlstate(sqlstate: string, message = ""): Status {
  if (sqlstate === "57014" && message.includes("statement timeout")) return Status.DEADLINE_EXCEEDED;
  return SQLSTATE_CODES.get(sqlstate) ?? SQLSTATE_CODES.get(sqlstate.slice(0, 2)) ?? Status.UNKNOWN;
}

/** SQLSTATEs after which the whole transaction can be retried: serialization_failure, deadlock_detected. */
const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(["40001", "40P01"]);

/**
 * PostgreSQL's protocol_violation. Sent as an ERROR, it is about a message the
 * gateway wrote from the request, the connection in step (PostgreSQL skipped
 * to the next Sync): resending it would fail again. As a FATAL error it ended
 * the connection.
 */
const PROTOCOL_VIOLATION = "08P01";

/** How long a client should wait before retrying a TRANSACTION_CONFLICT: sent as `google.rpc.RetryInfo`. */
const CONFLICT_RETRY_DELAY = { seconds: 0n, nanos: 20_000_000 };

/** Copies every field PostgreSQL sent with an error into the `PostgresError` detail. */
export function postgresErrorDetail(err: DatabaseError): PostgresError {
  return create(PostgresErrorSchema, {
    sqlstate: err.code ?? "",
    severity: err.severity ?? "",
    message: err.message,
    detail: err.detail ?? "",
    hint: err.hint ?? "",
    position: toUint(err.position),
    internalPosition: toUint(err.internalPosition),
    internalQuery: err.internalQuery ?? "",
    where: err.where ?? "",
    schemaName: err.schema ?? "",
    tableName: err.table ?? "",
    columnName: err.column ?? "",
    dataTypeName: err.dataType ?? "",
    constraintName: err.constraint ?? "",
    file: err.file ?? "",
    line: toUint(err.line),
    routine: err.routine ?? "",
  });
}

function toUint(text: string | undefined): number {
  const n = Number(text);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/**
 * A statement error from PostgreSQL, with every field it sent. Serialization
 * failures and deadlocks are TRANSACTION_CONFLICT (ABORTED) with a
 * `google.rpc.RetryInfo`; parameters that do not match the statement's
 * placeholders (a protocol violation in Bind) are INVALID_PARAMETER; every
 * other error is QUERY_FAILED with the code of its SQLSTATE, INVALID_ARGUMENT
 * for any other protocol violation sent as an ERROR.
 */
export function queryFailed(err: DatabaseError, metadata: Record<string, string> = {}): GatewayError {
  const sqlstate = err.code ?? "";
  const details: DetailMessage[] = [{ schema: PostgresErrorSchema, message: postgresErrorDetail(err) }];
  if (RETRYABLE_SQLSTATES.has(sqlstate)) {
    details.push({ schema: RetryInfoSchema, message: create(RetryInfoSchema, { retryDelay: CONFLICT_RETRY_DELAY }) });
    return new GatewayError("TRANSACTION_CONFLICT", err.message, { metadata: { ...metadata, sqlstate }, details, cause: err });
  }
  const clientMistake = sqlstate === PROTOCOL_VIOLATION && err.severity === "ERROR";
  if (clientMistake && err.routine === "exec_bind_message") {
    const message = `the number of parameters does not match the statement's placeholders ($1, $2 …): ${err.message}`;
    return new GatewayError("INVALID_PARAMETER", message, { metadata: { ...metadata, sqlstate }, details, cause: err });
  }
  return new GatewayError("QUERY_FAILED", err.message, {
    metadata: { ...metadata, sqlstate },
    details,
    code: clientMistake ? Status.INVALID_ARGUMENT : statusForSqlstate(sqlstate, err.message),
    cause: err,
  });
}

/**
 * The error of the statement at `index` of a batch: the same error with a
 * `StatementLocation` detail and `statement_index` in its ErrorInfo metadata.
 */
export function atStatement(err: GatewayError, index: number): GatewayError {
  return new GatewayError(err.reason, err.message, {
    code: err.code,
    metadata: { ...err.metadata, statement_index: String(index) },
    details: [...err.details, { schema: StatementLocationSchema, message: create(StatementLocationSchema, { statementIndex: index }) }],
    cause: err.cause,
    logFields: err.logFields,
  });
}

/**
 * The same error, marked as raised before anything of the call reached
 * PostgreSQL (`statement_sent: "false"` in its ErrorInfo metadata): a client
 * may safely send the call again, whatever its statements do.
 */
export function beforeStatement(err: unknown): GatewayError {
  const error = toGatewayError(err);
  return new GatewayError(error.reason, error.message, {
    code: error.code,
    metadata: { ...error.metadata, statement_sent: "false" },
    details: error.details,
    cause: error.cause,
    logFields: error.logFields,
  });
}

const UNAVAILABLE_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/**
 * Whether a connection can go back to its pool after a call failed with this
 * error: only after an ordinary statement ERROR, or a refusal that never
 * reached PostgreSQL. FATAL errors, broken sockets and the unknown destroy it.
 */
export function leavesConnectionUsable(err: unknown): boolean {
  if (err instanceof DatabaseError) return err.severity === "ERROR";
  if (!(err instanceof GatewayError)) return false;
  return err.cause === undefined || (err.cause instanceof DatabaseError && err.cause.severity === "ERROR");
}

/**
 * Converts any error into a GatewayError: the one place where foreign errors
 * (pg, node's network errors, bugs) are mapped. Messages of unexpected errors
 * are not passed on: they may name hosts, users or internals.
 */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof DatabaseError) return queryFailed(err);
  const errno = (err as { code?: unknown } | null)?.code;
  if (typeof errno === "string" && UNAVAILABLE_ERRNOS.has(errno)) {
    return new GatewayError("DATABASE_UNAVAILABLE", "the database server is unavailable", { cause: err });
  }
  if (err instanceof Error && /Connection terminated|connection timeout|Client has encountered a connection error/i.test(err.message)) {
    return new GatewayError("DATABASE_UNAVAILABLE", "the connection to the database server was lost", { cause: err });
  }
  return new GatewayError("INTERNAL", "internal error", { cause: err });
}
