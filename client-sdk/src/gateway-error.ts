// GatewayError, the SDK's one error: gRPC code, the gateway's stable reason, every field PostgreSQL sent, and whether a retry is safe.
import { anyIs, anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PostgresError } from "../../wire/src/gen/dbgateway/v1/errors_pb.js";
import { PostgresErrorSchema } from "../../wire/src/gen/dbgateway/v1/errors_pb.js";
import { ErrorInfoSchema } from "../../wire/src/gen/google/rpc/error_details_pb.js";
import type { Status } from "../../wire/src/gen/google/rpc/status_pb.js";

/**
 * The one error type of the SDK. `code` is the gRPC status code (Connect's
 * `Code`, same numbers), `reason` the gateway's stable reason (DATABASE_NOT_FOUND,
 * QUERY_FAILED …; the code's name when the error did not come from the
 * gateway), and for PostgreSQL errors `sqlstate` and the fields node-postgres's
 * `DatabaseError` has (`detail`, `hint`, `constraint`, `table` …) carry
 * everything the server sent.
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";

  constructor(
    message: string,
    readonly code: Code,
    readonly reason: string,
    readonly metadata: Readonly<Record<string, string>>,
    /** Every field PostgreSQL sent with the error, when it came from PostgreSQL. */
    readonly postgres: PostgresError | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The SQLSTATE of a PostgreSQL error, e.g. "23505"; undefined for other errors. */
  get sqlstate(): string | undefined {
    return this.postgres?.sqlstate || undefined;
  }

  /** ERROR, FATAL or PANIC. */
  get severity(): string | undefined {
    return field(this.postgres?.severity);
  }
  get detail(): string | undefined {
    return field(this.postgres?.detail);
  }
  get hint(): string | undefined {
    return field(this.postgres?.hint);
  }
  /** 1-based character position in the statement, as text (as pg has it). */
  get position(): string | undefined {
    return this.postgres?.position ? String(this.postgres.position) : undefined;
  }
  get internalPosition(): string | undefined {
    return this.postgres?.internalPosition ? String(this.postgres.internalPosition) : undefined;
  }
  get internalQuery(): string | undefined {
    return field(this.postgres?.internalQuery);
  }
  get where(): string | undefined {
    return field(this.postgres?.where);
  }
  get schema(): string | undefined {
    return field(this.postgres?.schemaName);
  }
  get table(): string | undefined {
    return field(this.postgres?.tableName);
  }
  get column(): string | undefined {
    return field(this.postgres?.columnName);
  }
  get dataType(): string | undefined {
    return field(this.postgres?.dataTypeName);
  }
  get constraint(): string | undefined {
    return field(this.postgres?.constraintName);
  }
  get file(): string | undefined {
    return field(this.postgres?.file);
  }
  get line(): string | undefined {
    return this.postgres?.line ? String(this.postgres.line) : undefined;
  }
  get routine(): string | undefined {
    return field(this.postgres?.routine);
  }

  /**
   * Whether running the call again is safe and may succeed: ABORTED (run the
   * whole transaction again), a pool that had no connection free in time, and
   * UNAVAILABLE when the call certainly did not reach PostgreSQL. An
   * UNAVAILABLE call that may have reached it (and COMMIT_OUTCOME_UNKNOWN) is
   * not: only the caller knows whether its statement is idempotent.
   */
  get retryable(): boolean {
    switch (this.code) {
      case Code.Aborted:
        return true;
      case Code.ResourceExhausted:
        return this.reason === "POOL_EXHAUSTED" || this.reason === "TOO_MANY_WAITERS";
      case Code.Unavailable:
        return this.notSent;
      default:
        return false;
    }
  }

  /**
   * True when the call never reached PostgreSQL: the gateway says so
   * (`statement_sent: "false"`), or no connection to the gateway could be made.
   */
  get notSent(): boolean {
    if (this.metadata.statement_sent === "false") return true;
    return this.code === Code.Unavailable && this.reason === Code[Code.Unavailable] && /No connection established|ECONNREFUSED/.test(this.message);
  }

  /** Converts any error from a call: ConnectErrors keep their code and details. */
  static from(err: unknown): GatewayError {
    if (err instanceof GatewayError) return err;
    const connect = ConnectError.from(err);
    const info = connect.findDetails(ErrorInfoSchema)[0];
    const postgres = connect.findDetails(PostgresErrorSchema)[0];
    return new GatewayError(connect.rawMessage, connect.code, info?.reason ?? Code[connect.code] ?? "UNKNOWN", info?.metadata ?? {}, postgres, {
      cause: err,
    });
  }

  /**
   * The error a `google.rpc.Status` inside a response describes (a batch
   * statement's, a transaction statement's, a QueryStream query's): as a
   * failed call's would be, with every detail (a `RetryInfo`, say) in its
   * cause, a ConnectError (`ConnectError.from(err.cause).findDetails(…)`).
   */
  static fromStatus(status: Status): GatewayError {
    const info = unpack(status.details, ErrorInfoSchema);
    const postgres = unpack(status.details, PostgresErrorSchema);
    const code = status.code as Code;
    const cause = new ConnectError(status.message, code);
    cause.details = status.details.map((d) => ({ type: d.typeUrl.slice(d.typeUrl.lastIndexOf("/") + 1), value: d.value }));
    return new GatewayError(status.message, code, info?.reason ?? Code[code] ?? "UNKNOWN", info?.metadata ?? {}, postgres, { cause });
  }
}

function field(value: string | undefined): string | undefined {
  return value || undefined;
}

function unpack<Desc extends typeof ErrorInfoSchema | typeof PostgresErrorSchema>(details: readonly Any[], schema: Desc) {
  const any = details.find((d) => anyIs(d, schema));
  return any === undefined ? undefined : anyUnpack(any, schema);
}

export { Code };
