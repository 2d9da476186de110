// @db-gateway/client/drizzle: a Drizzle driver over one gateway database: the query builder, relational queries, transactions, batches and the migrator.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as drizzleOrm from "drizzle-orm";
import {
  createTableRelationsHelpers,
  DefaultLogger,
  entityKind,
  extractTablesRelationalConfig,
  fillPlaceholders,
  NoopLogger,
  sql,
  type DrizzleConfig,
  type Logger,
  type Query,
  type RelationalSchemaConfig,
  type SQL,
  type TablesRelationalConfig,
} from "drizzle-orm";
import type { BatchItem, BatchResponse } from "drizzle-orm/batch";
import { readMigrationFiles, type MigrationConfig } from "drizzle-orm/migrator";
import {
  PgDatabase,
  PgDialect,
  PgPreparedQuery,
  PgSession,
  PgTransaction,
  type PgQueryResultHKT,
  type PgTransactionConfig,
  type PreparedQueryConfig,
  type SelectedFieldsOrdered,
} from "drizzle-orm/pg-core";
import types from "pg-types";
import { withTypeParsers, type Database } from "./database.js";
import type { MigrationFile } from "./fleet.js";
import { GatewayError } from "./gateway-error.js";
import type { QueryResult } from "./result.js";
import type { Transaction, TransactionOptions } from "./transaction.js";
import type { TypeParser } from "./type-parsers.js";
import { refuseSessionControl } from "./session-statement.js";
import type { Param } from "./values.js";

/** What `db.execute(sql)` resolves to: the SDK's result (rows as objects, rowCount, fields, command), shaped like pg's. */
export interface GatewayQueryResultHKT extends PgQueryResultHKT {
  type: QueryResult<this["row"]>;
}

/** Options of `drizzle()`: Drizzle's own (schema, logger, casing), and how often a transaction that ends ABORTED runs again. */
export interface GatewayDrizzleConfig<TSchema extends Record<string, unknown>> extends Omit<DrizzleConfig<TSchema>, "cache"> {
  /** Runs of a `db.transaction()` callback at most, when it ends ABORTED (a serialization failure, a deadlock). Default 1: as with pg, no retry. */
  transactionAttempts?: number;
}

/** A statement run outside a transaction or inside one; `arrays` asks for rows as arrays (Drizzle maps columns by position). */
type Runner = (sql: string, params: Param[], arrays: boolean) => Promise<QueryResult<unknown>>;

/**
 * The one private member of drizzle-orm this driver needs (`mapResultRow`,
 * which turns a row array into the selected shape, exported at runtime but
 * not typed): checked once, failing with its name if an upgrade removed it.
 */
const mapResultRow = (() => {
  const fn = (drizzleOrm as unknown as Record<string, unknown>).mapResultRow;
  if (typeof fn !== "function") throw new TypeError("drizzle-orm no longer exports mapResultRow: @db-gateway/client/drizzle needs an update for this version");
  return fn as (fields: SelectedFieldsOrdered, row: unknown[], joinsNotNullableMap: Record<string, boolean> | undefined) => unknown;
})();

/** Types whose text Drizzle's columns parse themselves, as with node-postgres (dates, timestamps, intervals, numeric[]). */
const RAW_OIDS = new Set([1082, 1114, 1184, 1186, 1115, 1182, 1185, 1187, 1231]);
const identity: TypeParser = (text) => text;
const parserCache = new Map<number, TypeParser>();
/** node-postgres's values (pg-types), with Drizzle's own exceptions: what Drizzle's column types expect. */
function drizzleParser(oid: number): TypeParser {
  let parser = parserCache.get(oid);
  if (parser === undefined) parserCache.set(oid, (parser = RAW_OIDS.has(oid) ? identity : (types.getTypeParser(oid, "text") as TypeParser)));
  return parser;
}

class GatewayPreparedQuery<T extends PreparedQueryConfig> extends PgPreparedQuery<T> {
  static override readonly [entityKind] = "GatewayPreparedQuery";

  constructor(
    private readonly run: Runner,
    query: Query,
    private readonly logger: Logger,
    queryMetadata: { type: "select" | "update" | "delete" | "insert"; tables: string[] } | undefined,
    private readonly fields: SelectedFieldsOrdered | undefined,
    private readonly arrayMode: boolean,
    private readonly customResultMapper: ((rows: unknown[][]) => T["execute"]) | undefined,
  ) {
    super(query, undefined, queryMetadata);
  }

  execute(placeholderValues: Record<string, unknown> = {}): Promise<T["execute"]> {
    return this.executeOn(this.run, placeholderValues);
  }

  /** Runs the statement with `run` (the database, or a transaction's statements), its rows mapped as Drizzle selected them. */
  async executeOn(run: Runner, placeholderValues: Record<string, unknown> = {}): Promise<T["execute"]> {
    const params = fillPlaceholders(this.query.params, placeholderValues) as Param[];
    this.logger.logQuery(this.query.sql, params);
    const mapped = this.fields !== undefined || this.customResultMapper !== undefined;
    return this.mapResult(await run(this.query.sql, params, mapped));
  }

  override mapResult(response: unknown): unknown {
    if (this.fields === undefined && this.customResultMapper === undefined) return response;
    const rows = (response as QueryResult<unknown[]>).rows;
    if (this.customResultMapper !== undefined) return this.customResultMapper(rows);
    // Set by Drizzle's select builder on the prepared query: which joined tables may be all null.
    const joins = (this as unknown as { joinsNotNullableMap?: Record<string, boolean> }).joinsNotNullableMap;
    return rows.map((row) => mapResultRow(this.fields!, row, joins));
  }

  async all(placeholderValues: Record<string, unknown> = {}): Promise<T["all"]> {
    const params = fillPlaceholders(this.query.params, placeholderValues) as Param[];
    this.logger.logQuery(this.query.sql, params);
    return (await this.run(this.query.sql, params, false)).rows;
  }

  /** @internal Drizzle asks whether rows come as arrays. */
  isResponseInArrayMode(): boolean {
    return this.arrayMode;
  }
}

class GatewaySession<TFullSchema extends Record<string, unknown>, TSchema extends TablesRelationalConfig> extends PgSession<
  GatewayQueryResultHKT,
  TFullSchema,
  TSchema
> {
  static override readonly [entityKind] = "GatewaySession";

  constructor(
    private readonly database: Database,
    readonly run: Runner,
    dialect: PgDialect,
    private readonly schema: RelationalSchemaConfig<TSchema> | undefined,
    private readonly options: { logger: Logger; transactionAttempts: number },
  ) {
    super(dialect);
  }

  prepareQuery<T extends PreparedQueryConfig>(
    query: Query,
    fields: SelectedFieldsOrdered | undefined,
    _name: string | undefined,
    isResponseInArrayMode: boolean,
    customResultMapper?: (rows: unknown[][]) => T["execute"],
    queryMetadata?: { type: "select" | "update" | "delete" | "insert"; tables: string[] },
  ): PgPreparedQuery<T> {
    // A name (Drizzle's .prepare("name")) is not sent: the gateway prepares and caches parameterized statements itself.
    return new GatewayPreparedQuery<T>(this.run, query, this.options.logger, queryMetadata, fields, isResponseInArrayMode, customResultMapper);
  }

  override async transaction<T>(
    transaction: (tx: PgTransaction<GatewayQueryResultHKT, TFullSchema, TSchema>) => Promise<T>,
    config?: PgTransactionConfig,
  ): Promise<T> {
    return this.inTransaction(
      (run) => transaction(new GatewayTransaction(this.dialect, this.withRunner(run), this.schema)),
      config,
      this.options.transactionAttempts,
    );
  }

  /** `db.$count()`: `execute` resolves to a result, not to its rows (as with node-postgres). */
  override async count(query: SQL): Promise<number> {
    const result = await this.execute<QueryResult<{ count: unknown }>>(query);
    return Number(result.rows[0]!.count);
  }

  /** Drizzle's batch: every statement sent at once in one transaction (one message to the gateway), all committed or none. */
  async batch(queries: readonly BatchItem<"pg">[]): Promise<unknown[]> {
    const prepared = queries.map((q) => (q as unknown as { _prepare(): GatewayPreparedQuery<PreparedQueryConfig> })._prepare());
    return this.inTransaction((run) => Promise.all(prepared.map((p) => p.executeOn(run))), undefined, 1);
  }

  withRunner(run: Runner): GatewaySession<TFullSchema, TSchema> {
    return new GatewaySession(this.database, run, this.dialect, this.schema, this.options);
  }

  /** Runs `fn` in one of the SDK's interactive transactions; the callback's own error comes out as thrown (the SDK would wrap it). */
  private async inTransaction<T>(fn: (run: Runner) => Promise<T>, config: PgTransactionConfig | undefined, maxAttempts: number): Promise<T> {
    let thrown: { error: unknown } | undefined;
    try {
      return await this.database.transaction(
        async (tx) => {
          thrown = undefined;
          try {
            return await fn(transactionRunner(tx));
          } catch (error) {
            thrown = { error };
            throw error;
          }
        },
        { ...transactionOptions(config), maxAttempts },
      );
    } catch (err) {
      if (thrown !== undefined && !(thrown.error instanceof GatewayError)) throw thrown.error;
      throw err;
    }
  }
}

class GatewayTransaction<TFullSchema extends Record<string, unknown>, TSchema extends TablesRelationalConfig> extends PgTransaction<
  GatewayQueryResultHKT,
  TFullSchema,
  TSchema
> {
  static override readonly [entityKind] = "GatewayTransaction";

  readonly #dialect: PgDialect;

  constructor(
    dialect: PgDialect,
    private readonly gatewaySession: GatewaySession<TFullSchema, TSchema>,
    schema: RelationalSchemaConfig<TSchema> | undefined,
    nestedIndex = 0,
  ) {
    super(dialect, gatewaySession, schema, nestedIndex);
    this.#dialect = dialect;
  }

  /** A nested transaction: a savepoint in this one. */
  override async transaction<T>(transaction: (tx: PgTransaction<GatewayQueryResultHKT, TFullSchema, TSchema>) => Promise<T>): Promise<T> {
    const savepoint = `sp${this.nestedIndex + 1}`;
    const tx = new GatewayTransaction<TFullSchema, TSchema>(this.#dialect, this.gatewaySession, this.schema, this.nestedIndex + 1);
    await tx.execute(sql.raw(`savepoint ${savepoint}`));
    try {
      const result = await transaction(tx);
      await tx.execute(sql.raw(`release savepoint ${savepoint}`));
      return result;
    } catch (err) {
      await tx.execute(sql.raw(`rollback to savepoint ${savepoint}`));
      throw err;
    }
  }
}

/** A Drizzle database over one gateway database: Drizzle's pg-core API, and `batch([...])` as one atomic round trip. */
export class GatewayDrizzleDatabase<TSchema extends Record<string, unknown> = Record<string, never>> extends PgDatabase<GatewayQueryResultHKT, TSchema> {
  static override readonly [entityKind] = "GatewayDrizzleDatabase";

  /** Runs the queries in one transaction, sent together: each one's result in order, or the first error and nothing committed. */
  async batch<U extends BatchItem<"pg">, T extends Readonly<[U, ...U[]]>>(batch: T): Promise<BatchResponse<T>> {
    return (await sessionOf(this).batch(batch)) as BatchResponse<T>;
  }
}

const sessions = new WeakMap<object, GatewaySession<Record<string, unknown>, TablesRelationalConfig>>();
const dialects = new WeakMap<object, PgDialect>();
function sessionOf(db: object): GatewaySession<Record<string, unknown>, TablesRelationalConfig> {
  const session = sessions.get(db);
  if (session === undefined) throw new TypeError("not a database made by drizzle() of @db-gateway/client/drizzle");
  return session;
}
function dialectOf(db: object): PgDialect {
  const dialect = dialects.get(db);
  if (dialect === undefined) throw new TypeError("not a database made by drizzle() of @db-gateway/client/drizzle");
  return dialect;
}

/** Each schema's relational configuration, extracted once: a handle per request costs no schema walk. */
const relationalConfigs = new WeakMap<Record<string, unknown>, RelationalSchemaConfig<TablesRelationalConfig>>();

/**
 * A Drizzle database over one gateway database
 * (`drizzle(gateway.platform(p).tenant(t), { schema })`): no connection of its
 * own, cheap to make per request (the schema's relations are worked out once
 * per schema object). Values come as with Drizzle on node-postgres.
 */
export function drizzle<TSchema extends Record<string, unknown> = Record<string, never>>(
  database: Database,
  config: GatewayDrizzleConfig<TSchema> = {},
): GatewayDrizzleDatabase<TSchema> {
  const dialect = new PgDialect({ casing: config.casing });
  const logger = config.logger === true ? new DefaultLogger() : config.logger === false || config.logger === undefined ? new NoopLogger() : config.logger;
  let schema: RelationalSchemaConfig<TablesRelationalConfig> | undefined;
  if (config.schema !== undefined) {
    schema = relationalConfigs.get(config.schema);
    if (schema === undefined) {
      const tables = extractTablesRelationalConfig(config.schema, createTableRelationsHelpers);
      schema = { fullSchema: config.schema, schema: tables.tables, tableNamesMap: tables.tableNamesMap };
      relationalConfigs.set(config.schema, schema);
    }
  }
  const decoded = withTypeParsers(database, drizzleParser);
  const run: Runner = (text, params, arrays) => {
    refuseSessionControl(text, "use db.transaction()");
    return arrays ? decoded.query(text, params, { rowMode: "array" }) : decoded.query(text, params);
  };
  const session = new GatewaySession(decoded, run, dialect, schema, { logger, transactionAttempts: config.transactionAttempts ?? 1 });
  const db = new GatewayDrizzleDatabase<TSchema>(dialect, session, schema as RelationalSchemaConfig<never> | undefined);
  sessions.set(db, session as unknown as GatewaySession<Record<string, unknown>, TablesRelationalConfig>);
  dialects.set(db, dialect);
  return db;
}

/**
 * Drizzle's migrator for one gateway database: applies the migrations of
 * `migrationsFolder` (drizzle-kit's output) not yet applied, in one
 * transaction, and records them in `drizzle.__drizzle_migrations` there.
 */
export async function migrate(db: GatewayDrizzleDatabase<Record<string, unknown>>, config: MigrationConfig): Promise<void> {
  const migrations = readMigrationFiles(config);
  await dialectOf(db).migrate(migrations, sessionOf(db) as unknown as PgSession, config);
}

/**
 * A drizzle-kit migration folder as the gateway's fleet migrations
 * (`gateway.admin().migrate(platform, files)`, which brings the platform's main
 * database and every tenant to the latest): the journal's entries in order,
 * version n+1 for its n-th entry (`0000_init` → version 1, name `init`), each
 * file's SQL whole (its statement breakpoints are comments). Use one of the two
 * on a platform, not both: the fleet records versions in its own table,
 * Drizzle's migrator in `drizzle.__drizzle_migrations`.
 */
export async function drizzleMigrationFiles(migrationsFolder: string): Promise<MigrationFile[]> {
  const journal = JSON.parse(await readFile(join(migrationsFolder, "meta", "_journal.json"), "utf8")) as { entries?: { idx: number; tag: string }[] };
  if (!Array.isArray(journal.entries)) throw new TypeError(`${migrationsFolder}/meta/_journal.json has no entries: not a drizzle-kit migration folder`);
  return Promise.all(
    journal.entries.map(async (entry) => ({
      version: BigInt(entry.idx + 1),
      name: entry.tag.replace(/^\d+_/, ""),
      sql: await readFile(join(migrationsFolder, `${entry.tag}.sql`), "utf8"),
    })),
  );
}

function transactionRunner(tx: Transaction): Runner {
  return (text, params, arrays) => (arrays ? tx.query(text, params, { rowMode: "array" }) : tx.query(text, params));
}

function transactionOptions(config: PgTransactionConfig | undefined): TransactionOptions {
  const options: TransactionOptions = {};
  if (config?.isolationLevel !== undefined) options.isolationLevel = config.isolationLevel === "read uncommitted" ? "read committed" : config.isolationLevel;
  if (config?.accessMode === "read only") options.readOnly = true;
  if (config?.deferrable === true) options.deferrable = true;
  return options;
}
