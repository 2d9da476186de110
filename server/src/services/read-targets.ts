// Where a read-only call runs: a streaming replica that can serve it (its commit token honoured), else the primary; and the commit token a write answers with.
import { DatabaseError } from "pg";
import { GatewayError } from "../errors.js";
import { IsolationLevel, type TransactionOptions } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { Lease } from "../pool/lease.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { parseLsn, type Replicas, type ReplicaState } from "../tenancy/replicas.js";

/** What a call's request says of where it may run. */
export interface ReadRequest {
  readOnly: boolean;
  /** A commit token the read must see ("" for none). */
  readAfter: string;
}

/** Where a transaction may run: a READ ONLY one on a replica, unless SERIALIZABLE (PostgreSQL refuses that on a standby). */
export function readRequestOf(options: TransactionOptions | undefined): ReadRequest {
  return {
    readOnly: options?.readOnly === true && options.isolationLevel !== IsolationLevel.SERIALIZABLE,
    readAfter: options?.readAfter ?? "",
  };
}

/** The replicas, and what is told of each read-only call: the cluster's name and who served it ("primary", or the replica's name). */
export interface ReadRouting {
  replicas: Pick<Replicas, "choose" | "hasReplicas" | "markDown">;
  onServed?(database: string, servedBy: string): void;
}

/** A replica's refusals of a connection, before any statement, that the primary may serve instead: it is down, or has not replayed the database or its role yet. */
const FALLS_BACK = new Set(["DATABASE_UNAVAILABLE", "DATABASE_NOT_FOUND"]);

/**
 * Runs `run` on the pools that serve the call: a replica's for a read-only
 * call when one can (see `Replicas.choose`), else the primary's. A replica
 * whose connection fails before the statement was sent is marked down (unless
 * PostgreSQL there answered: a role or database not replayed yet) and the
 * call runs on the primary instead, so a replica stopped fails no read.
 */
export async function onReadTarget<T>(
  routing: ReadRouting | undefined,
  primary: PoolManager,
  database: string,
  request: ReadRequest,
  run: (pools: PoolManager) => Promise<T>,
): Promise<T> {
  if (request.readAfter !== "") parseLsn(request.readAfter);
  if (!request.readOnly || routing === undefined) return run(primary);
  let replica: ReplicaState | undefined;
  try {
    replica = await routing.replicas.choose(database, request.readAfter);
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    replica = undefined;
  }
  if (replica !== undefined) {
    try {
      const result = await run(replica.pools);
      routing.onServed?.(database, replica.name);
      return result;
    } catch (err) {
      if (!(err instanceof GatewayError && FALLS_BACK.has(err.reason) && err.metadata.statement_sent === "false")) throw err;
      // A replica that answered (a role or database it has not replayed yet, a full server) is not down: only this call moves.
      if (!(err.cause instanceof DatabaseError)) routing.replicas.markDown(replica);
    }
  }
  const result = await run(primary);
  routing.onServed?.(database, "primary");
  return result;
}

/**
 * Makes the session of a read_only call that the primary serves read-only
 * until the connection's reset (DISCARD ALL), so that a write fails there with
 * 25006 as it would on a replica: a call marked read-only never writes,
 * wherever it runs (the SDK retries such calls as idempotent).
 */
export async function readOnlySession(lease: Lease): Promise<void> {
  await lease.client.query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
}

/**
 * The commit token of a write just run on `lease` (its statement committed,
 * the connection reset): the primary's WAL insert position now, at or past
 * the end of the commit's record; "" where the database's cluster has no
 * replicas, or the position cannot be read. Not the write position
 * (`pg_current_wal_lsn`): an asynchronous commit returns before its record is
 * written, so that position can lie before it.
 */
export async function commitToken(routing: ReadRouting | undefined, database: string, lease: Lease): Promise<string> {
  if (routing === undefined || !routing.replicas.hasReplicas(database)) return "";
  try {
    const { rows } = await lease.client.query<{ lsn: string }>("SELECT pg_catalog.pg_current_wal_insert_lsn()::text AS lsn");
    return rows[0]?.lsn ?? "";
  } catch {
    return "";
  }
}
