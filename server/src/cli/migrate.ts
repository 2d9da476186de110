/** `db-gateway migrate`: a platform's migrations (a directory of versioned SQL files) over its databases, through a running gateway's AdminService. */
import type { DatabaseMigration, MigrationTotals } from "@db-gateway/client";
import { MAX_MIGRATION_CONCURRENCY } from "../tenancy/migrator.js";
import { validatePlatform } from "../tenancy/naming.js";
import { EXIT_FAILED, EXIT_OK, UsageError, fail, jsonSafe, output, parseCommandArgs, type Command } from "./command.js";
import { checkName, CONNECTION_OPTIONS, connectionHelp, withAdminClient } from "./gateway-connection.js";

/** A fleet's run takes long: an hour unless --timeout says otherwise. */
const DEFAULT_TIMEOUT_SECS = 3600;

export const migrateCommand: Command = {
  name: "migrate",
  summary: "apply a platform's migrations to its main database and every tenant database (through the gateway's AdminService)",
  help: `Usage: db-gateway migrate --platform NAME [--dir DIRECTORY] [--dry-run] [--concurrency N]
                          [--stop-on-failure] [--tenant ID]... [connection options] [--json]

Sends every migration in DIRECTORY (default migrations/NAME): files named
<version>_<name>.sql, such as 0001_create_patients.sql, applied in order of
version. The gateway brings the platform's main database to the latest, then
every tenant database (its template among them), a few at a time, and at the
end those created meanwhile. Each migration runs as the database's own role in
one transaction with its record (dbgateway.schema_migrations, which tenants can
read but not change), unless its first line is
  -- db-gateway: no-transaction
when its statements run one by one (CREATE INDEX CONCURRENTLY): write those so
that they can run again (IF NOT EXISTS), since a failure part-way leaves the
statements before it done.

A database fails alone: the others go on (unless --stop-on-failure). Running the
same command again resumes: each database gets only what it lacks. A database
whose record disagrees with the files (a changed file, a version that is not
there, a new version below its latest) is reported as drifted and not touched.

  --dir DIRECTORY      the platform's migrations (default migrations/NAME)
  --dry-run            only report what would be applied, and drift
  --concurrency N      databases at once (default 4, at most 32)
  --stop-on-failure    start no more databases after one fails
  --tenant ID          only this tenant ("" for the main database); repeatable

${connectionHelp(DEFAULT_TIMEOUT_SECS)}

Output: a line per database as it is done, then the totals; --json one JSON
object per line for each ({"database": …}, then {"totals": …}). Exits 1 when a
database failed or drifted.

Examples:
  export GATEWAY_URL=https://db-gateway.internal:9000 GATEWAY_API_KEY_FILE=/run/secrets/api-key-admin
  db-gateway migrate --platform medstoreapp --dry-run
  db-gateway migrate --platform medstoreapp --dir db/migrations --concurrency 8`,
  async run(args) {
    const { values } = parseCommandArgs(args, {
      platform: { type: "string" },
      dir: { type: "string" },
      "dry-run": { type: "boolean" },
      concurrency: { type: "string" },
      "stop-on-failure": { type: "boolean" },
      tenant: { type: "string", multiple: true },
      ...CONNECTION_OPTIONS,
    });
    const platform = values.platform;
    if (platform === undefined) throw new UsageError("migrate needs --platform");
    checkName(() => validatePlatform(platform));
    const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
    if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_MIGRATION_CONCURRENCY)) {
      throw new UsageError(`--concurrency must be a whole number from 1 to ${MAX_MIGRATION_CONCURRENCY} (got "${values.concurrency}")`);
    }
    const directory = values.dir ?? `migrations/${platform}`;
    return withAdminClient(values, DEFAULT_TIMEOUT_SECS, async (admin, { loadMigrations }) => {
      let migrations;
      try {
        migrations = await loadMigrations(directory);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return fail(values.json, code ? `cannot read the migrations in "${directory}" (${code}): give --dir DIRECTORY` : (err as Error).message);
      }
      if (migrations.length === 0) return fail(values.json, `no migrations (<version>_<name>.sql) in "${directory}"`);
      let troubled = 0;
      for await (const progress of admin.migrate(platform, migrations, {
        dryRun: values["dry-run"] ?? false,
        stopOnFailure: values["stop-on-failure"] ?? false,
        ...(concurrency !== undefined ? { concurrency } : {}),
        ...(values.tenant !== undefined ? { tenantIds: values.tenant } : {}),
      })) {
        if ("database" in progress) {
          const d = progress.database;
          if (d.outcome === "failed" || d.outcome === "drifted") troubled++;
          const { error, ...rest } = d;
          const record = { ...rest, ...(error !== undefined ? { error: { reason: error.reason, sqlstate: error.sqlstate, message: error.message } } : {}) };
          output(values.json, jsonSafe({ database: record }), () => databaseLine(d));
        } else {
          output(values.json, jsonSafe({ totals: progress.totals }), () => totalsLine(progress.totals));
        }
      }
      return troubled > 0 ? EXIT_FAILED : EXIT_OK;
    });
  },
};

function databaseLine(d: DatabaseMigration): string {
  const versions = d.applied.length > 0 ? ` ${d.applied.join(",")}` : "";
  const error = d.error === undefined ? "" : `: ${d.error.reason}${d.error.sqlstate ? ` (SQLSTATE ${d.error.sqlstate})` : ""} ${d.error.message}`;
  const failed = d.failedVersion !== undefined ? ` at version ${d.failedVersion}` : "";
  return `${d.outcome.padEnd(8)} ${d.database}${versions} (now version ${d.version}, ${Math.round(d.durationMs)} ms)${failed}${error}`;
}

function totalsLine(t: MigrationTotals): string {
  const counts = (["applied", "current", "pending", "failed", "drifted", "skipped"] as const).filter((k) => t[k] > 0).map((k) => `${t[k]} ${k}`);
  return `${t.databases} databases to version ${t.latestVersion} in ${(t.durationMs / 1000).toFixed(1)} s: ${counts.join(", ") || "none"}`;
}
