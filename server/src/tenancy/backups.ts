// Backups of tenant databases with pg_dump (one snapshot per database, its rows counted in it), restores into new tenants as their own roles, verification, and forks of a serving tenant.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform, type Writable } from "node:stream";
import type pg from "pg";
import { GatewayError } from "../errors.js";
import { ensureRecord, insertRecord, MIGRATIONS_SCHEMA, readRecord, recordState, type RecordedMigration } from "./migration-record.js";
import { databaseName, parseDatabaseName } from "./naming.js";
import { RESTORE_AS_ROLE, settleTogether, type PgTools, type ToolConnection, type ToolProcess } from "./pg-tools.js";
import { createSet, fileSha256, indexSet, manifestEntry, pruneSets, type BackupFile } from "./backup-sets.js";
import type { DatabaseRegistry } from "./registry.js";
import type { TenantRoles } from "./roles.js";

export type { BackupFile, RecordedMigration };

/** A tenant made from a backup or a fork: its rows, and the latest migration it has. */
export interface Restored {
  database: string;
  tableRows: Record<string, number>;
  version: bigint;
}

export interface BackupsOptions {
  /** BACKUP_DIR: where backup sets go; undefined when none is set (Backup, RestoreTenant and VerifyBackup are then refused). */
  directory: string | undefined;
  tools: PgTools;
  /** The administrative role's connection for pg_dump of a database, on its cluster. */
  adminOf(database: string): ToolConnection;
  /** A tenant role's connection for pg_restore into its database, on its cluster. */
  asRoleOn(database: string, role: string, password: string): ToolConnection;
  roles: TenantRoles;
  /** Creates (where the placement puts them) and drops tenants. */
  lifecycle: {
    requireConfigured(platform: string): void;
    create(platform: string, tenantId: string, template: string): Promise<string>;
    drop(platform: string, tenantId: string): Promise<string>;
  };
  registry: DatabaseRegistry;
  /** Opens an administrative connection inside a database. */
  connectTo(database: string): Promise<pg.Client>;
  /** The gateway's catalog database, backed up with a platform's set. */
  catalogDatabase: string;
  /** Told of each database's backup once its set is complete. */
  onTaken(file: BackupFile): Promise<void>;
  /** Told of each tenant made by a restore or a fork, with the latest migration it has (0n: none). */
  onRestored(database: string, version: bigint): Promise<void>;
}

/**
 * Backups, restores and forks. pg_dump runs as the administrative role, in a
 * snapshot exported by a transaction in which the tables' rows are counted
 * and the migrations' record read, so a backup taken under writes is
 * consistent and its counts are exact. The file leaves out the schema
 * dbgateway; restores run pg_restore as the new tenant's own role, so
 * nothing in a dump (a tenant's function in a CHECK constraint, say) runs
 * with an administrator's rights, and then record the migrations again.
 */
export class Backups {
  constructor(private readonly o: BackupsOptions) {}

  /** Takes a set: the tenants named, or every database of the platform and the catalog. */
  async take(
    platform: string,
    tenantIds: readonly string[] | undefined,
    { keepDays, verify, signal }: { keepDays: number; verify: boolean; signal?: AbortSignal },
  ): Promise<{ set: string; files: BackupFile[]; removed: string[]; verified: (Verification & { file: string })[] }> {
    const root = this.#directory();
    const databases =
      tenantIds === undefined
        ? [...this.o.registry.list(new Set([platform])).map((d) => d.name), this.o.catalogDatabase]
        : tenantIds.map((t) => this.#existing(platform, t));
    await this.o.tools.check("pg_dump");
    const set = await createSet(root, platform);
    const files: BackupFile[] = [];
    try {
      for (const database of databases) {
        const file = `${set}/${database}.dump`;
        const output = createWriteStream(join(root, file), { mode: 0o600 });
        try {
          files.push({ ...(await this.dump(database, output, signal)), file });
        } finally {
          output.destroy(); // closed already when the dump succeeded
        }
      }
      await indexSet(root, set, files);
    } catch (err) {
      await rm(join(root, set), { recursive: true, force: true }); // no half set
      throw err;
    }
    for (const f of files) await this.o.onTaken(f);
    // Each of the platform's files restored and compared, one at a time; older sets removed only when all of them passed.
    const verified: (Verification & { file: string })[] = [];
    if (verify)
      for (const f of files.filter((f) => parseDatabaseName(f.database)?.platform === platform))
        verified.push({ file: f.file, ...(await this.verify(f.file)) });
    const removed = keepDays > 0 && verified.every((v) => v.ok) ? await pruneSets(root, platform, keepDays, set) : [];
    return { set, files, removed, verified };
  }

  /** Streams a backup of one tenant, taken now, into `output` (closed at the end). */
  async download(platform: string, tenantId: string, output: Writable, signal?: AbortSignal): Promise<BackupFile> {
    const database = this.#existing(platform, tenantId);
    await this.o.tools.check("pg_dump");
    return { ...(await this.dump(database, output, signal)), file: "" };
  }

  /**
   * pg_dump of one database into `output` (custom format, without the schema
   * dbgateway), from a snapshot in which its tables' rows are counted and its
   * migrations' record is read.
   */
  async dump(database: string, output: Writable, signal?: AbortSignal): Promise<BackupFile> {
    const inside = await this.o.connectTo(database);
    let dump: ToolProcess | undefined;
    const stop = () => dump?.child.kill("SIGKILL");
    signal?.addEventListener("abort", stop, { once: true });
    try {
      await inside.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const { rows } = await inside.query<{ snapshot: string; taken_at: Date }>(
        "SELECT pg_catalog.pg_export_snapshot() AS snapshot, pg_catalog.now() AS taken_at",
      );
      const { snapshot, taken_at: takenAt } = rows[0]!;
      const tableRows = await countRows(inside);
      // The gateway's record is left out (restores make it again); a schema of that name that is not the gateway's is the tenant's data.
      let ours = false;
      try {
        ours = (await recordState(inside, database)) === "ours";
      } catch (err) {
        if (!(err instanceof GatewayError && err.reason === "MIGRATION_SCHEMA_CONFLICT")) throw err;
      }
      const migrations = ours ? await readRecord(inside) : [];
      signal?.throwIfAborted();
      dump = this.o.tools.spawn("pg_dump", this.o.adminOf(database), database, [
        "--format=custom",
        `--snapshot=${snapshot}`,
        ...(ours ? [`--exclude-schema=${MIGRATIONS_SCHEMA}`] : []),
        "--no-password",
      ]);
      dump.child.stdin.end();
      const hash = createHash("sha256");
      let bytes = 0;
      const measure = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          bytes += chunk.length;
          done(null, chunk);
        },
      });
      await settleTogether(pipeline(dump.child.stdout, measure, output), dump);
      await inside.query("COMMIT");
      // The catalog is no tenant's, whatever its name looks like.
      const tenantId = database === this.o.catalogDatabase ? "" : (parseDatabaseName(database)?.tenantId ?? "");
      return { database, tenantId, file: "", bytes, sha256: hash.digest("hex"), takenAt, tableRows, migrations };
    } catch (err) {
      stop();
      output.destroy();
      if (signal?.aborted) throw new GatewayError("CANCELLED", "the call was cancelled", { cause: err });
      throw err;
    } finally {
      signal?.removeEventListener("abort", stop);
      await inside.end().catch(() => undefined);
    }
  }

  /** Restores a file of BACKUP_DIR into a new tenant (never over an existing one), checked against its manifest first. */
  async restore(platform: string, tenantId: string, file: string): Promise<Restored> {
    const restored = await this.#restore(platform, tenantId, file);
    await this.o.onRestored(restored.database, restored.version);
    return restored;
  }

  /** `restore`, without telling anyone: a verification's scratch tenant is gone again at once. */
  async #restore(platform: string, tenantId: string, file: string): Promise<Restored> {
    const root = this.#directory();
    const entry = await manifestEntry(root, file);
    // A platform's own tenants' backups only: not another platform's, nor the catalog's (every platform's audit trail).
    if (parseDatabaseName(entry.database)?.platform !== platform) {
      throw new GatewayError("INVALID_REQUEST", `${file} is not a backup of a database of platform "${platform}"`);
    }
    await this.o.tools.check("pg_restore");
    const path = join(root, file);
    const sha256 = await fileSha256(path);
    if (sha256 !== entry.sha256) throw new GatewayError("BACKUP_CORRUPT", `${file} does not match its manifest's checksum`);
    const database = await this.o.lifecycle.create(platform, tenantId, "");
    try {
      const tableRows = await this.#restoreInto(
        database,
        (restore) => pipeline(createReadStream(path), restore.child.stdin),
        () => entry.migrations,
      );
      return { database, tableRows, version: latestVersion(entry.migrations) };
    } catch (err) {
      await this.o.lifecycle.drop(platform, tenantId).catch(() => undefined); // no half-restored tenant
      throw err;
    }
  }

  /** Restores a file into a scratch tenant of its platform, compares its rows with the manifest's counts, and drops it. */
  async verify(file: string): Promise<Verification> {
    const root = this.#directory();
    const entry = await manifestEntry(root, file);
    const platform = parseDatabaseName(entry.database)?.platform;
    if (platform === undefined)
      throw new GatewayError("INVALID_REQUEST", `${file} is not a tenant database's backup (the catalog's is restored with pg_restore)`);
    const scratch = `verify_${randomBytes(6).toString("hex")}`;
    let restored: Record<string, number>;
    try {
      restored = (await this.#restore(platform, scratch, file)).tableRows;
    } catch (err) {
      if (err instanceof GatewayError && err.reason === "BACKUP_CORRUPT") return { ok: false, tables: [], problems: [err.message] };
      throw err;
    }
    try {
      const names = [...new Set([...Object.keys(entry.tableRows), ...Object.keys(restored)])].sort();
      const tables = names.map((table) => ({ table, expected: entry.tableRows[table] ?? -1, restored: restored[table] ?? -1 }));
      const problems = tables
        .filter((t) => t.expected !== t.restored)
        .map((t) =>
          t.expected < 0
            ? `${t.table} is not in the manifest`
            : t.restored < 0
              ? `${t.table} was not restored`
              : `${t.table}: ${t.restored} rows restored, ${t.expected} backed up`,
        );
      return { ok: problems.length === 0, tables, problems };
    } finally {
      await this.o.lifecycle.drop(platform, scratch);
    }
  }

  /** A new tenant as a copy of a serving one: its snapshot dumped straight into the new tenant's restore. */
  async fork(platform: string, sourceTenantId: string, tenantId: string, signal?: AbortSignal): Promise<Restored> {
    const source = this.#existing(platform, sourceTenantId);
    await Promise.all([this.o.tools.check("pg_dump"), this.o.tools.check("pg_restore")]);
    const database = await this.o.lifecycle.create(platform, tenantId, "");
    try {
      let migrations: RecordedMigration[] = [];
      const tableRows = await this.#restoreInto(
        database,
        async (restore) => {
          migrations = (await this.dump(source, restore.child.stdin, signal)).migrations;
        },
        () => migrations,
      );
      const version = latestVersion(migrations);
      await this.o.onRestored(database, version);
      return { database, tableRows, version };
    } catch (err) {
      await this.o.lifecycle.drop(platform, tenantId).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Fills the new `database` from a dump that `feed` writes into pg_restore's
   * input. Holding the database's migration lock (no Migrate run touches it
   * meanwhile), the gateway's record is made first, so that nothing restored
   * can take its name; pg_restore then runs as the database's own role, in
   * one transaction that a first error rolls back; every object restored is
   * checked to be that role's; the migrations are recorded again. Returns the
   * rows of each table.
   */
  async #restoreInto(
    database: string,
    feed: (restore: ToolProcess) => Promise<void>,
    migrations: () => readonly RecordedMigration[],
  ): Promise<Record<string, number>> {
    const role = this.o.roles.roleName(database);
    const inside = await this.o.connectTo(database);
    try {
      await inside.query("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($1))", [`db-gateway/migrate/${database}`]);
      await ensureRecord(inside, database, role);
      const restore = this.o.tools.spawn("pg_restore", this.o.asRoleOn(database, role, this.o.roles.password(role)), database, [...RESTORE_AS_ROLE]);
      restore.child.stdout.resume();
      try {
        await settleTogether(feed(restore), restore);
      } catch (err) {
        restore.child.stdin.destroy();
        restore.child.kill("SIGKILL");
        throw err;
      }
      const { rows } = await inside.query<{ object: string }>(
        `SELECT c.oid::pg_catalog.regclass::text AS object FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', $1) AND pg_catalog.pg_get_userbyid(c.relowner) <> $2 LIMIT 1`,
        [MIGRATIONS_SCHEMA, role],
      );
      if (rows.length > 0) throw new GatewayError("BACKUP_FAILED", `${rows[0]!.object} was not restored as ${database}'s own role`);
      const record = migrations();
      if (record.length > 0) await insertRecord(inside, record);
      return await countRows(inside);
    } finally {
      await inside.end().catch(() => undefined);
    }
  }

  #directory(): string {
    if (this.o.directory === undefined) throw new GatewayError("BACKUP_DIR_UNWRITABLE", "no backup directory is set: set BACKUP_DIR");
    return this.o.directory;
  }

  /** A database of the platform that exists, by tenant id. */
  #existing(platform: string, tenantId: string): string {
    this.o.lifecycle.requireConfigured(platform);
    const database = databaseName(platform, tenantId);
    if (!this.o.registry.has(database)) throw new GatewayError("DATABASE_NOT_FOUND", `database "${database}" does not exist`, { metadata: { database } });
    return database;
  }
}

/**
 * Rows of every table of the database (in the transaction's snapshot), by
 * "schema.table": plain scans, which run none of the tenant's code (the
 * administrative sessions set row_security off, so a policy fails the count
 * instead of running).
 */
async function countRows(inside: pg.ClientBase): Promise<Record<string, number>> {
  const { rows: tables } = await inside.query<{ name: string; qualified: string }>(
    `SELECT n.nspname || '.' || c.relname AS name, pg_catalog.format('%I.%I', n.nspname, c.relname) AS qualified
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', $1)
      ORDER BY 1`,
    [MIGRATIONS_SCHEMA],
  );
  const counts: Record<string, number> = {};
  for (const t of tables) {
    const { rows } = await inside.query<{ n: string }>(`SELECT pg_catalog.count(*) AS n FROM ONLY ${t.qualified}`);
    counts[t.name] = Number(rows[0]!.n);
  }
  return counts;
}

function latestVersion(migrations: readonly RecordedMigration[]): bigint {
  return migrations.reduce((max, m) => (BigInt(m.version) > max ? BigInt(m.version) : max), 0n);
}

/** What a verification found. */
export interface Verification {
  ok: boolean;
  tables: { table: string; expected: number; restored: number }[];
  problems: string[];
}
