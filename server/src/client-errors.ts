// What a client is told of an error: its gRPC status with rich details, PostgreSQL's own words withheld when DATABASE_ERROR_TEXT says so.
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Metadata, type StatusObject } from "@grpc/grpc-js";
import { DatabaseError } from "pg";
import { PostgresErrorSchema, type PostgresError } from "../../wire/src/gen/dbgateway/v1/errors_pb.js";
import { ErrorInfoSchema } from "../../wire/src/gen/google/rpc/error_details_pb.js";
import { StatusSchema, type Status as RpcStatus } from "../../wire/src/gen/google/rpc/status_pb.js";
import { ERROR_DOMAIN, GatewayError } from "./errors.js";

/**
 * What clients are told of PostgreSQL's errors (DATABASE_ERROR_TEXT):
 * "send", everything PostgreSQL said; "withhold", not its message text,
 * detail, hint, context or internal query, which may quote data, but the
 * SQLSTATE, its class, and where the error was (constraint, column, table,
 * schema, data type, position). Set once per process, at start: a process
 * serves one gateway.
 */
export type DatabaseErrorText = "send" | "withhold";

let databaseErrorText: DatabaseErrorText = "send";

/** Sets what clients are told of PostgreSQL's errors, for the whole process (see `DatabaseErrorText`). */
export function setDatabaseErrorText(text: DatabaseErrorText): void {
  databaseErrorText = text;
}

/** The reasons whose message is PostgreSQL's own (`queryFailed`). */
const POSTGRES_WORDS: ReadonlySet<string> = new Set(["QUERY_FAILED", "TRANSACTION_CONFLICT", "INVALID_PARAMETER"]);

/** The SQLSTATE classes (PostgreSQL's Appendix A): what a withheld message says instead. */
const SQLSTATE_CLASSES: Readonly<Record<string, string>> = {
  "01": "warning",
  "02": "no data",
  "03": "SQL statement not yet complete",
  "08": "connection exception",
  "09": "triggered action exception",
  "0A": "feature not supported",
  "0B": "invalid transaction initiation",
  "0F": "locator exception",
  "0L": "invalid grantor",
  "0P": "invalid role specification",
  "0Z": "diagnostics exception",
  "20": "case not found",
  "21": "cardinality violation",
  "22": "data exception",
  "23": "integrity constraint violation",
  "24": "invalid cursor state",
  "25": "invalid transaction state",
  "26": "invalid SQL statement name",
  "27": "triggered data change violation",
  "28": "invalid authorization specification",
  "2B": "dependent privilege descriptors still exist",
  "2D": "invalid transaction termination",
  "2F": "SQL routine exception",
  "34": "invalid cursor name",
  "38": "external routine exception",
  "39": "external routine invocation exception",
  "3B": "savepoint exception",
  "3D": "invalid catalog name",
  "3F": "invalid schema name",
  "40": "transaction rollback",
  "42": "syntax error or access rule violation",
  "44": "WITH CHECK OPTION violation",
  "53": "insufficient resources",
  "54": "program limit exceeded",
  "55": "object not in prerequisite state",
  "57": "operator intervention",
  "58": "system error",
  "72": "snapshot failure",
  F0: "configuration file error",
  HV: "foreign data wrapper error",
  P0: "PL/pgSQL error",
  XX: "internal error",
};

/** The error as a client may see it: PostgreSQL's own words withheld when DATABASE_ERROR_TEXT says so. */
function forClient(err: GatewayError): GatewayError {
  // Only the errors whose message is PostgreSQL's: the gateway's own (a COPY refused, say) say nothing of the data.
  if (databaseErrorText === "send" || !(err.cause instanceof DatabaseError) || !POSTGRES_WORDS.has(err.reason)) return err;
  const cause = err.cause;
  const sqlstate = cause.code ?? "";
  const where = [
    cause.constraint && `constraint "${cause.constraint}"`,
    cause.column && `column "${cause.column}"`,
    cause.table && `table "${cause.table}"`,
  ].filter(Boolean);
  const message = `${SQLSTATE_CLASSES[sqlstate.slice(0, 2)] ?? "database error"} (SQLSTATE ${sqlstate}${where.length > 0 ? `, ${where.join(", ")}` : ""}): PostgreSQL's message is withheld (DATABASE_ERROR_TEXT)`;
  const details = err.details.map((d) =>
    d.schema === PostgresErrorSchema
      ? { schema: PostgresErrorSchema, message: { ...(d.message as PostgresError), message, detail: "", hint: "", where: "", internalQuery: "" } }
      : d,
  );
  return new GatewayError(err.reason, message, { code: err.code, metadata: err.metadata, details });
}

/**
 * The gRPC status for an error: code, message, and `grpc-status-details-bin`
 * holding a `google.rpc.Status` with an `ErrorInfo` and any extra details.
 */
export function toStatusObject(error: GatewayError): Partial<StatusObject> {
  const err = forClient(error);
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, toRpcStatus(err))));
  return { code: err.code, details: err.message, metadata };
}

/** The `google.rpc.Status` for an error, as sent in status details and in batch results. */
export function toRpcStatus(error: GatewayError): RpcStatus {
  const err = forClient(error);
  const info = create(ErrorInfoSchema, { reason: err.reason, domain: ERROR_DOMAIN, metadata: err.metadata });
  return create(StatusSchema, {
    code: err.code,
    message: err.message,
    details: [anyPack(ErrorInfoSchema, info), ...err.details.map((d) => anyPack(d.schema, d.message))],
  });
}
