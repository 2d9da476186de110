// @db-gateway/client/kysely: a Kysely dialect over one gateway database; queries, streams over StreamQuery, transactions over the SDK's interactive transactions.
import {
  createQueryId,
  IdentifierNode,
  Kysely,
  RawNode,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type KyselyConfig,
  type QueryCompiler,
  type QueryResult,
  type TransactionSettings,
} from "kysely";
import type { Database } from "./database.js";
import { openTransaction, type OpenTransaction } from "./open-transaction.js";
import { refuseSessionControl, unsupportedByGateway } from "./session-statement.js";
import type { TransactionOptions } from "./transaction.js";
import type { Param } from "./values.js";

/** Options of the gateway's Kysely dialect. */
export interface GatewayDialectConfig {
  /** The database the Kysely instance queries: `gateway.platform(p)` or `gateway.platform(p).tenant(t)`. */
  database: Database;
}

/**
 * A Kysely dialect over one gateway database: PostgreSQL's adapter, query
 * compiler and introspector, with a driver whose "connections" are free
 * (each query is a gateway call; the gateway pools PostgreSQL's
 * connections). `db.transaction()` is one interactive transaction on the
 * gateway, with its isolation level and access mode; `.stream(n)` reads rows
 * over a StreamQuery call, `n` rows per message. Values are decoded as by the
 * SDK (int8 as bigint unless the client says `int8: "string"`).
 */
export class GatewayDialect implements Dialect {
  readonly #database: Database;

  constructor(config: GatewayDialectConfig) {
    this.#database = config.database;
  }

  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }
  createDriver(): Driver {
    return new GatewayDriver(this.#database);
  }
  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }
}

/**
 * A Kysely instance over one gateway database, as cheap to make per request
 * as the handle it takes (no connection, no call): `createKysely<DB>(gateway.platform(p).tenant(t))`.
 */
export function createKysely<DB>(database: Database, config: Omit<KyselyConfig, "dialect"> = {}): Kysely<DB> {
  return new Kysely<DB>({ ...config, dialect: new GatewayDialect({ database }) });
}

/** Hands out connections that cost nothing: the gateway holds a PostgreSQL connection only for a call or a transaction. */
class GatewayDriver implements Driver {
  constructor(private readonly database: Database) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    return new GatewayConnection(this.database);
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    (connection as GatewayConnection).begin(transactionOptionsOf(settings));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as GatewayConnection).end("commit");
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as GatewayConnection).end("rollback");
  }

  async savepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler["compileQuery"]): Promise<void> {
    await connection.executeQuery(compileQuery(savepointNode("SAVEPOINT", name), createQueryId()));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler["compileQuery"]): Promise<void> {
    await connection.executeQuery(compileQuery(savepointNode("ROLLBACK TO SAVEPOINT", name), createQueryId()));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler["compileQuery"]): Promise<void> {
    await connection.executeQuery(compileQuery(savepointNode("RELEASE SAVEPOINT", name), createQueryId()));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    await (connection as GatewayConnection).release();
  }

  async destroy(): Promise<void> {}
}

/** Statements outside a transaction are calls of their own; between begin and commit they run in the connection's open transaction. */
class GatewayConnection implements DatabaseConnection {
  #transaction: OpenTransaction | undefined;

  constructor(private readonly database: Database) {}

  begin(options: TransactionOptions): void {
    this.#transaction = openTransaction(this.database, options);
  }

  async end(how: "commit" | "rollback"): Promise<void> {
    const tx = this.#transaction;
    this.#transaction = undefined;
    if (tx !== undefined) await (how === "commit" ? tx.commit() : tx.rollback());
  }

  /** A transaction left open (Kysely ends its own, but a `startTransaction()` may be abandoned) is rolled back. */
  async release(): Promise<void> {
    await this.end("rollback").catch(() => undefined);
  }

  async executeQuery<R>(compiledQuery: CompiledQuery, options?: { signal?: AbortSignal }): Promise<QueryResult<R>> {
    const params = compiledQuery.parameters as readonly Param[];
    refuseSessionControl(compiledQuery.sql, "use db.transaction()");
    const tx = this.#transaction;
    const result =
      tx !== undefined ? await tx.query(compiledQuery.sql, params) : await this.database.query(compiledQuery.sql, params, { signal: options?.signal });
    return {
      rows: result.rows as R[],
      ...(AFFECTING.has(result.command) ? { numAffectedRows: BigInt(result.rowCount) } : {}),
    };
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number, options?: { signal?: AbortSignal }): AsyncIterableIterator<QueryResult<R>> {
    if (this.#transaction !== undefined) {
      throw unsupportedByGateway(
        "stream() inside a transaction",
        "an interactive transaction answers each statement whole; run the query with execute(), or stream outside the transaction",
      );
    }
    const rows = this.database.stream<Record<string, unknown>>(compiledQuery.sql, compiledQuery.parameters as readonly Param[], {
      maxRowsPerMessage: chunkSize,
      signal: options?.signal,
    });
    for await (const batch of rows.batches()) yield { rows: batch as R[] };
  }
}

/** Commands whose row count Kysely reports as `numAffectedRows`. */
const AFFECTING = new Set(["INSERT", "UPDATE", "DELETE", "MERGE"]);

function transactionOptionsOf(settings: TransactionSettings): TransactionOptions {
  const options: TransactionOptions = {};
  switch (settings.isolationLevel) {
    case undefined:
      break;
    case "read uncommitted": // PostgreSQL runs it as READ COMMITTED
    case "read committed":
      options.isolationLevel = "read committed";
      break;
    case "repeatable read":
    case "serializable":
      options.isolationLevel = settings.isolationLevel;
      break;
    default:
      throw unsupportedByGateway(`isolation level ${settings.isolationLevel}`, "PostgreSQL has read committed, repeatable read and serializable");
  }
  if (settings.accessMode === "read only") options.readOnly = true;
  return options;
}

/** A savepoint statement as Kysely's own dialects build it: the name an identifier, quoted by the compiler. */
function savepointNode(command: string, name: string): RawNode {
  return RawNode.createWithChildren([RawNode.createWithSql(`${command} `), IdentifierNode.create(name)]);
}
