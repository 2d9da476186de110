import { anyIs, anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PostgresError } from "./gen/dbgateway/v1/errors_pb.js";
import { PostgresErrorSchema } from "./gen/dbgateway/v1/errors_pb.js";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

/**
 * The one error type of the SDK. `code` is the gRPC status code (Connect's
 * `Code`, same numbers), `reason` the gateway's stable reason (DATABASE_NOT_FOUND,
 * QUERY_FAILED …), and for PostgreSQL errors `sqlstate` and `postgres` carry
 * every field the server sent.
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";

  constructor(
    message: string,
    readonly code: Code,
    readonly reason: string,
    readonly metadata: Readonly<Record<string, string>>,
    readonly postgres: PostgresError | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The SQLSTATE of a PostgreSQL error, e.g. "23505"; undefined for other errors. */
  get sqlstate(): string | undefined {
    return this.postgres?.sqlstate || undefined;
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

  /** The error a `google.rpc.Status` inside a response describes (a batch statement's, a transaction statement's). */
  static fromStatus(status: Status): GatewayError {
    const info = unpack(status.details, ErrorInfoSchema);
    const postgres = unpack(status.details, PostgresErrorSchema);
    const code = status.code as Code;
    return new GatewayError(status.message, code, info?.reason ?? Code[code] ?? "UNKNOWN", info?.metadata ?? {}, postgres);
  }
}

function unpack<Desc extends typeof ErrorInfoSchema | typeof PostgresErrorSchema>(details: readonly Any[], schema: Desc) {
  const any = details.find((d) => anyIs(d, schema));
  return any === undefined ? undefined : anyUnpack(any, schema);
}

export { Code };
