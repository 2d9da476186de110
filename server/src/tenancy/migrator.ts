// Brings a platform's databases to the latest of its migrations: the main database first, then the others a few at a time, each as its own role, each recorded in the database itself.
import { randomBytes } from "node:crypto";
import type pg from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import { splitStatements } from "../execution/statement-policy.js";
import type { PoolManager } from "../pool/pool-manager.js";
import { ensureRecord, issueToken, MIGRATIONS_SCHEMA, readRecord, recordState, revokeToken } from "./migration-record.js";
import { plan, type Migration, type Recorded } from "./migrations.js";
import { databaseName } from "./naming.js";
import type { DatabaseRegistry } from "./registry.js";

/** Databases migrated at once unless the call asks otherwise, and at most. */
export const DEFAULT_MIGRATION_CONCURRENCY = 4;
export const MAX_MIGRATION_CONCURRENCY = 32;

export type MigrationOutcome = "applied" | "current" | "pending" | "failed" | "drifted" | "skipped";

/** What became of one database. */
export interface DatabaseMigrationResult {
  database: string;
  tenantId: string;
  outcome: MigrationOutcome;
  /** Applied (or, in a dry run, to apply), in order. */
  applied: bigint[];
  /** The latest version recorded afterwards. */
  version: bigint;
  /** failed: the migration's error; drifted: what differs. */
  error?: GatewayError;
  failedVersion?: bigint;
  millis: number;
}

export interface MigrationRun {
  platform: string;
  migrations: readonly Migration[];
  dryRun: boolean;
  concurrency: number;
  stopOnFailure: boolean;
  /** Only these tenants ("" for the main database); undefined: every database of the platform. */
  tenantIds?: readonly string[];
  /** Who runs it, as recorded with each version. */
  actor: string;
  deadline: number;
  signal: AbortSignal;
  /** Told of each database as it is done; awaited, so a slow reader holds the run back. */
  onResult(result: DatabaseMigrationResult): Promise<void>;
}

export interface MigratorOptions {
  pools: PoolManager;
  registry: DatabaseRegistry;
  /** Reads pg_database into the registry again: databases another gateway created or dropped since the last refresh. */
  refreshRegistry(): Promise<void>;
  /** Opens an administrative connection inside a database. */
  connectTo(database: string): Promise<pg.Client>;
  /** A database's login role (`TenantRoles.roleName`). */
  roleOf(database: string): string;
}

/**
 * Runs a platform's migrations over its databases. Each database is done on
 * two connections: an administrative one inside it, which holds the
 * database's migration lock (so that two runs, from any gateway, take turns),
 * sets up its record and reads it, and lets the migrations record themselves
 * with a one-time token; and one of the tenant's own pool (under the
 * gateway's cap), on which the migrations run as the tenant's role, so that
 * nothing the tenant's code does during them (a trigger, a function) runs
 * with an administrator's rights. A migration and its record commit
 * together, so a run stopped anywhere is resumed by running it again.
 */
export class Migrator {
  constructor(private readonly o: MigratorOptions) {}

  /** Migrates the databases, telling `onResult` of each; returns every result. */
  async run(run: MigrationRun): Promise<DatabaseMigrationResult[]> {
    const statements = await statementsOf(run.migrations);
    const chosen = run.tenantIds === undefined ? undefined : new Set(run.tenantIds.map((t) => databaseName(run.platform, t)));
    const platforms = new Set([run.platform]);
    const main = databaseName(run.platform, "");
    const done = new Map<string, DatabaseMigrationResult>();
    let stopped = false;
    const migrate = async (database: string, tenantId: string) => {
      const result =
        stopped || run.signal.aborted
          ? { database, tenantId, outcome: "skipped" as const, applied: [], version: 0n, millis: 0 }
          : await this.#migrateDatabase(database, tenantId, run, statements);
      if (result.outcome === "failed" && run.stopOnFailure) stopped = true;
      done.set(database, result);
      await run.onResult(result);
    };
    // The main database first, on its own; then the rest; then, until there are none, those created meanwhile.
    for (let round = 0; ; round++) {
      // Another gateway may have created a tenant since this one's last refresh: a run must not skip it unseen.
      await this.o.refreshRegistry();
      const waiting = this.o.registry.list(platforms).filter((d) => !done.has(d.name) && (chosen === undefined || chosen.has(d.name)));
      if (waiting.length === 0) break;
      const first = waiting.find((d) => d.name === main);
      if (first !== undefined) await migrate(first.name, first.tenantId);
      await eachLimited(
        waiting.filter((d) => d !== first),
        run.concurrency,
        (d) => migrate(d.name, d.tenantId),
      );
      if (round > 10) break; // tenants created faster than they are migrated: the next run takes them
    }
    return [...done.values()];
  }

  async #migrateDatabase(
    database: string,
    tenantId: string,
    run: MigrationRun,
    statements: ReadonlyMap<bigint, readonly string[]>,
  ): Promise<DatabaseMigrationResult> {
    const started = performance.now();
    const result = (r: Omit<DatabaseMigrationResult, "database" | "tenantId" | "millis">): DatabaseMigrationResult => ({
      database,
      tenantId,
      millis: performance.now() - started,
      ...r,
    });
    let admin: pg.Client;
    try {
      admin = await this.o.connectTo(database);
    } catch (err) {
      return result({ outcome: "failed", applied: [], version: 0n, error: unavailable(err) });
    }
    let recorded: Recorded = new Map();
    const applied: bigint[] = [];
    let failedVersion: bigint | undefined;
    try {
      await lockMigrations(admin, database, run);
      const role = this.o.roleOf(database);
      const state = run.dryRun ? await recordState(admin, database) : (await ensureRecord(admin, database, role), "ours");
      if (state === "ours") recorded = new Map((await readRecord(admin)).map((r) => [BigInt(r.version), { name: r.name, checksum: r.checksum }]));
      const needs = plan(run.migrations, recorded);
      if ("drift" in needs) {
        return result({
          outcome: "drifted",
          applied: [],
          version: latest(recorded),
          error: new GatewayError("MIGRATION_DRIFT", `${database}: ${needs.drift}`),
        });
      }
      const { pending } = needs;
      if (pending.length === 0) return result({ outcome: "current", applied: [], version: latest(recorded) });
      if (run.dryRun) return result({ outcome: "pending", applied: pending.map((m) => m.version), version: latest(recorded) });
      const token = randomBytes(32).toString("base64url");
      await issueToken(admin, token);
      try {
        await this.o.pools.withConnection(
          database,
          async (lease) => {
            // The call's deadline bounds a migration, not the pool's statement time (the pool resets this after).
            await lease.client.query("SET statement_timeout = 0");
            for (const migration of pending) {
              failedVersion = migration.version;
              await apply(lease.client, migration, statements.get(migration.version), token, run.actor);
              applied.push(migration.version);
              failedVersion = undefined;
            }
          },
          { deadline: run.deadline, signal: run.signal, unmetered: true },
        );
      } finally {
        await revokeToken(admin, token);
      }
      return result({ outcome: "applied", applied, version: applied.at(-1)! });
    } catch (err) {
      const version = applied.at(-1) ?? latest(recorded);
      return result({ outcome: "failed", applied, version, error: toGatewayError(err), ...(failedVersion !== undefined ? { failedVersion } : {}) });
    } finally {
      await admin.end().catch(() => undefined);
    }
  }
}

/** The statements of each migration that runs without a transaction, split once for every database; a syntax error fails the call. */
async function statementsOf(migrations: readonly Migration[]): Promise<Map<bigint, readonly string[]>> {
  const split = new Map<bigint, readonly string[]>();
  for (const m of migrations) {
    if (m.transactional) continue;
    try {
      split.set(m.version, await splitStatements(m.sql));
    } catch (err) {
      throw new GatewayError("INVALID_MIGRATION", `migration ${m.version} (${m.name}) does not parse: ${(err as Error).message}`);
    }
  }
  return split;
}

/**
 * One migration on the tenant's connection: in a transaction with its record,
 * or, without one, each statement on its own and then the record (a failure
 * part-way leaves the statements before it done, and nothing recorded).
 */
async function apply(client: pg.ClientBase, migration: Migration, statements: readonly string[] | undefined, token: string, actor: string): Promise<void> {
  const started = performance.now();
  const record = () =>
    client.query(`SELECT ${MIGRATIONS_SCHEMA}.record_migration($1, $2, $3, $4, $5, $6)`, [
      token,
      migration.version.toString(),
      migration.name,
      migration.checksum,
      Math.round(performance.now() - started),
      actor,
    ]);
  if (statements !== undefined) {
    for (const statement of statements) await client.query(statement);
    await record();
    return;
  }
  await client.query("BEGIN");
  try {
    await client.query(migration.sql);
    if (client.getTransactionStatus() !== "T") {
      // Its own COMMIT or ROLLBACK: what ran before it stays, unrecorded.
      throw new GatewayError(
        "INVALID_MIGRATION",
        `migration ${migration.version} (${migration.name}) ended its transaction itself: leave COMMIT and ROLLBACK out, or make it a no-transaction migration`,
      );
    }
    await record();
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

function latest(recorded: Recorded): bigint {
  let max = 0n;
  for (const version of recorded.keys()) if (version > max) max = version;
  return max;
}

function unavailable(err: unknown): GatewayError {
  const error = toGatewayError(err);
  return error.reason === "INTERNAL" ? new GatewayError("DATABASE_UNAVAILABLE", "the database could not be reached", { cause: err }) : error;
}

/** How often a run waiting for another's lock on a database tries again. */
const LOCK_RETRY_MILLIS = 100;

/**
 * Takes the database's migration lock (a session lock inside it, so two runs
 * from any gateway take turns), trying again until the call's deadline or
 * its cancellation rather than waiting on PostgreSQL without a bound.
 */
async function lockMigrations(admin: pg.ClientBase, database: string, run: Pick<MigrationRun, "deadline" | "signal">): Promise<void> {
  for (;;) {
    const { rows } = await admin.query<{ locked: boolean }>("SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext($1)) AS locked", [
      `db-gateway/migrate/${database}`,
    ]);
    if (rows[0]!.locked) return;
    if (run.signal.aborted) throw new GatewayError("CANCELLED", "the call was cancelled");
    if (Date.now() + LOCK_RETRY_MILLIS > run.deadline) {
      throw new GatewayError("DEADLINE_EXCEEDED", `another migration run held ${database} until the call's deadline`, { metadata: { database } });
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MILLIS));
  }
}

/** Runs `fn` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
