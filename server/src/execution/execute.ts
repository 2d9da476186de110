// One statement: checked and its parameters converted before a connection is taken, then sent on a leased connection.
import type { Context } from "@opentelemetry/api";
import type pg from "pg";
import type { Statement } from "../../../wire/src/gen/dbgateway/v1/values_pb.js";
import { GatewayError, toGatewayError } from "../errors.js";
import { toPgParams, type PgParam } from "./params.js";
import { CopyQuery } from "./copy-statement.js";
import { isCopy } from "./leading-keyword.js";
import type { Lease } from "../pool/pool-manager.js";
import { withStatementSpan } from "../telemetry/tracing.js";
import { BufferedQuery, type BufferedResult } from "./buffered-query.js";
import type { ResultAccount } from "./result-budget.js";
import type { StatementCheck } from "./statement-policy.js";

/**
 * Runs one statement with bound parameters on a leased connection, in a span
 * of its own when tracing is on, and returns its result (rows encoded as they
 * arrived, counted in `account`: see `sendStatement`) and the time it took.
 */
export async function runStatement(
  lease: Pick<Lease, "client" | "database">,
  statement: PreparedStatement,
  account: ResultAccount,
  onCut?: (error: GatewayError) => void,
): Promise<{ result: BufferedResult; nanos: bigint }> {
  const started = process.hrtime.bigint();
  try {
    const result = await sendTraced(lease.client, lease.database, statement, account, onCut);
    return { result, nanos: process.hrtime.bigint() - started };
  } catch (err) {
    throw toGatewayError(err);
  }
}

/** `sendStatement` in a span of its own when tracing is on. */
export function sendTraced(
  client: pg.Client,
  database: string,
  statement: PreparedStatement,
  account: ResultAccount,
  onCut?: (error: GatewayError) => void,
): Promise<BufferedResult> {
  return withStatementSpan(database, statement.sql, () => sendStatement(client, statement, account, onCut), statement.traceContext);
}

/**
 * Sends one statement with the extended protocol (even without parameters,
 * so the SQL text is exactly one statement, never a script) and resolves with
 * its result, its rows encoded as they arrived and counted in `account`: a
 * result past the account's limits is cut off, and `onCut` told (see
 * `BufferedQuery`). A COPY must run alone on its connection (see `CopyQuery`).
 */
export function sendStatement(
  client: pg.Client,
  statement: PreparedStatement,
  account: ResultAccount,
  onCut?: (error: GatewayError) => void,
): Promise<BufferedResult> {
  const query = statement.copy
    ? new CopyQuery(statement.sql, statement.values, account, onCut)
    : new BufferedQuery(statement.sql, statement.values, account, onCut);
  client.query(query);
  return query.done;
}

/** A statement whose parameters are checked and converted, ready to run. */
export interface PreparedStatement {
  readonly sql: string;
  readonly values: PgParam[];
  /** The query's own trace context (`queryTraceContext`), when the call carried several callers' queries. */
  readonly traceContext?: Context;
  /** A COPY (`isCopy`): sent alone, nothing written behind it until it is answered (see `CopyQuery`). */
  readonly copy: boolean;
}

/** The most parameters a statement can have: PostgreSQL's Bind message counts them in 16 bits. */
export const MAX_PARAMETERS = 65_535;

/**
 * Checks a statement from a request and converts its parameters: done before
 * a connection is taken, so a bad request never holds one.
 */
export function prepareStatement(statement: Pick<Statement, "sql" | "params">, traceContext?: Context, check?: StatementCheck): PreparedStatement {
  if (statement.sql.trim() === "") throw new GatewayError("INVALID_REQUEST", "sql is empty");
  if (statement.sql.includes("\0")) throw new GatewayError("INVALID_REQUEST", "sql cannot contain a zero byte");
  if (statement.params.length > MAX_PARAMETERS) {
    throw new GatewayError(
      "INVALID_PARAMETER",
      `a statement takes at most ${MAX_PARAMETERS} parameters, the most PostgreSQL's protocol can carry (got ${statement.params.length})`,
    );
  }
  check?.(statement.sql);
  return { sql: statement.sql, values: toPgParams(statement.params), traceContext, copy: isCopy(statement.sql) };
}
