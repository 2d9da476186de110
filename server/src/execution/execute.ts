import type pg from "pg";
import type { ResultSet, Statement } from "../gen/dbgateway/v1/values_pb.js";
import { GatewayError, toGatewayError } from "../errors.js";
import { toPgParams, type PgParam } from "./params.js";
import { toResultSet, type TextRow } from "./result-set.js";

/** Anything a statement can run on: a pool or one checked-out client. */
export type Queryable = Pick<pg.Pool, "query"> | Pick<pg.PoolClient, "query">;

/**
 * Runs one statement with bound parameters and returns its protobuf result.
 * The extended protocol is used even without parameters, so the SQL text is
 * exactly one statement and is never interpreted as a script.
 */
export async function execute(on: Queryable, statement: PreparedStatement): Promise<ResultSet> {
  const { sql, values } = statement;
  const started = process.hrtime.bigint();
  let result: pg.QueryArrayResult<TextRow>;
  try {
    result = await on.query({ text: sql, values, rowMode: "array", queryMode: "extended" } as pg.QueryArrayConfig);
  } catch (err) {
    throw toGatewayError(err);
  }
  return toResultSet(result, process.hrtime.bigint() - started);
}

/** A statement whose parameters are checked and converted, ready to run. */
export interface PreparedStatement {
  readonly sql: string;
  readonly values: PgParam[];
}

/**
 * Checks a statement from a request and converts its parameters: done before
 * a connection is taken, so a bad request never holds one.
 */
export function prepareStatement(statement: Pick<Statement, "sql" | "params">): PreparedStatement {
  if (statement.sql.trim() === "") throw new GatewayError("INVALID_REQUEST", "sql is empty");
  if (statement.sql.includes("\0")) throw new GatewayError("INVALID_REQUEST", "sql cannot contain a zero byte");
  return { sql: statement.sql, values: toPgParams(statement.params) };
}
