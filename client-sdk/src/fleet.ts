// Fleet operations' streams in the SDK: a platform's migrations read from a directory of versioned SQL files and Migrate's results, and a backup downloaded into a stream.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { MigrationOutcome, type AdminService, type BackupFile } from "../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import type { CallOptions } from "./database.js";
import { GatewayError } from "./gateway-error.js";

/** One migration: its SQL runs in one transaction unless its first line is `-- db-gateway: no-transaction`. */
export interface MigrationFile {
  version: bigint;
  name: string;
  sql: string;
}

export interface MigrateOptions {
  /** Only report what would be applied, and which databases have drifted. */
  dryRun?: boolean;
  /** Databases migrated at once (the gateway's default 4, at most 32). */
  concurrency?: number;
  /** Start no more databases after one fails. */
  stopOnFailure?: boolean;
  /** Only these tenants ("" for the main database). */
  tenantIds?: readonly string[];
}

export type MigrationOutcomeName = "applied" | "current" | "pending" | "failed" | "drifted" | "skipped";

/** What became of one database. */
export interface DatabaseMigration {
  database: string;
  /** Empty for the main database. */
  tenantId: string;
  outcome: MigrationOutcomeName;
  /** The versions applied (in a dry run: to apply), in order. */
  applied: bigint[];
  /** The latest version the database has recorded afterwards (0n: none). */
  version: bigint;
  /** failed: the migration's error (`failedVersion` is the one); drifted: what differs. */
  error?: GatewayError;
  failedVersion?: bigint;
  durationMs: number;
}

export interface MigrationTotals {
  databases: number;
  applied: number;
  current: number;
  pending: number;
  failed: number;
  drifted: number;
  skipped: number;
  latestVersion: bigint;
  durationMs: number;
}

/** One database's result, or, last, the totals. */
export type MigrationProgress = { database: DatabaseMigration } | { totals: MigrationTotals };

const FILE = /^(\d+)_([A-Za-z0-9_]+)\.sql$/;

/**
 * Reads a platform's migrations from a directory: every `<version>_<name>.sql`
 * (`0001_create_patients.sql`), ordered by version. Another `.sql` file, or a
 * version given twice, is an error rather than left out.
 */
export async function loadMigrations(directory: string): Promise<MigrationFile[]> {
  const files = (await readdir(directory)).filter((f) => f.endsWith(".sql"));
  const migrations: MigrationFile[] = [];
  const seen = new Map<bigint, string>();
  for (const file of files) {
    const match = FILE.exec(file);
    if (match === null) throw new Error(`${join(directory, file)}: a migration's file is named <version>_<name>.sql, e.g. 0001_create_patients.sql`);
    const version = BigInt(match[1]!);
    if (seen.has(version)) throw new Error(`${directory}: version ${version} is both ${seen.get(version)} and ${file}`);
    seen.set(version, file);
    migrations.push({ version, name: match[2]!, sql: await readFile(join(directory, file), "utf8") });
  }
  return migrations.sort((a, b) => (a.version < b.version ? -1 : 1));
}

const OUTCOMES: Record<MigrationOutcome, MigrationOutcomeName | undefined> = {
  [MigrationOutcome.UNSPECIFIED]: undefined,
  [MigrationOutcome.APPLIED]: "applied",
  [MigrationOutcome.CURRENT]: "current",
  [MigrationOutcome.PENDING]: "pending",
  [MigrationOutcome.FAILED]: "failed",
  [MigrationOutcome.DRIFTED]: "drifted",
  [MigrationOutcome.SKIPPED]: "skipped",
};

/** AdminService.Migrate's responses as `MigrationProgress`, its failure as a GatewayError. */
export async function* migrationProgress(
  admin: Client<typeof AdminService>,
  platform: string,
  migrations: readonly MigrationFile[],
  options: MigrateOptions & CallOptions,
): AsyncIterable<MigrationProgress> {
  const request = {
    platform,
    migrations: migrations.map((m) => ({ version: m.version, name: m.name, sql: m.sql })),
    dryRun: options.dryRun ?? false,
    concurrency: options.concurrency ?? 0,
    stopOnFailure: options.stopOnFailure ?? false,
    tenantIds: [...(options.tenantIds ?? [])],
  };
  try {
    for await (const response of admin.migrate(request, { timeoutMs: options.timeoutMs, signal: options.signal })) {
      const { result } = response;
      if (result.case === "database") {
        const d = result.value;
        yield {
          database: {
            database: d.database,
            tenantId: d.tenantId,
            outcome: OUTCOMES[d.outcome] ?? "failed",
            applied: d.applied,
            version: d.version,
            ...(d.error !== undefined ? { error: GatewayError.fromStatus(d.error) } : {}),
            ...(d.failedVersion !== 0n ? { failedVersion: d.failedVersion } : {}),
            durationMs: d.duration === undefined ? 0 : durationMs(d.duration),
          },
        };
      } else if (result.case === "totals") {
        const t = result.value;
        yield {
          totals: {
            databases: t.databases,
            applied: t.applied,
            current: t.current,
            pending: t.pending,
            failed: t.failed,
            drifted: t.drifted,
            skipped: t.skipped,
            latestVersion: t.latestVersion,
            durationMs: t.duration === undefined ? 0 : durationMs(t.duration),
          },
        };
      }
    }
  } catch (err) {
    throw GatewayError.from(err);
  }
}

/** DownloadBackup's chunks written into `output` as they come (waiting when it is full); resolves to the final description. */
export async function downloadBackup(
  admin: Client<typeof AdminService>,
  platform: string,
  tenantId: string,
  output: NodeJS.WritableStream,
  options: CallOptions,
): Promise<BackupFile> {
  let done: BackupFile | undefined;
  try {
    for await (const response of admin.downloadBackup({ platform, tenantId }, { timeoutMs: options.timeoutMs, signal: options.signal })) {
      if (response.part.case === "chunk") {
        if (!output.write(response.part.value)) {
          await new Promise<void>((resolve, reject) => {
            const drained = () => (output.off("error", failed), resolve());
            const failed = (err: Error) => (output.off("drain", drained), reject(err));
            output.once("drain", drained).once("error", failed);
          });
        }
      } else if (response.part.case === "done") done = response.part.value;
    }
  } catch (err) {
    throw GatewayError.from(err);
  }
  if (done === undefined) throw new GatewayError("the gateway ended the download without describing it", 13, "INTERNAL", {}, undefined);
  return done;
}
