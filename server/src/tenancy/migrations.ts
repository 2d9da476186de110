// A platform's migrations as a Migrate call gives them (validated, checksummed), and the record each database keeps of them: schema dbgateway, read by its tenant, written only through the gateway.
import { createHash } from "node:crypto";
import type pg from "pg";
import { escapeIdentifier } from "pg";
import { GatewayError } from "../errors.js";

/** A migration's first line that says it cannot run in a transaction (CREATE INDEX CONCURRENTLY): its statements run one by one. */
const NO_TRANSACTION = /^--\s*db-gateway:\s*no-transaction\s*$/;
const NAME = /^[A-Za-z0-9_]{1,100}$/;
/** Every migration's SQL together, at most: a request is held whole in memory. */
const MAX_TOTAL_SQL_BYTES = 16 * 1024 * 1024;

/** One migration, validated. */
export interface Migration {
  version: bigint;
  name: string;
  sql: string;
  /** SHA-256 of the SQL, hex: what a database records and is checked against. */
  checksum: string;
  /** False when its first line is the no-transaction marker. */
  transactional: boolean;
}

/** Validates a call's migrations and orders them by version; INVALID_MIGRATION says what is wrong. */
export function migrationSet(given: readonly { version: bigint; name: string; sql: string }[]): Migration[] {
  if (given.length === 0) throw new GatewayError("INVALID_MIGRATION", "no migrations were given");
  let bytes = 0;
  const seen = new Set<bigint>();
  const set = given.map(({ version, name, sql }) => {
    if (version <= 0n) throw new GatewayError("INVALID_MIGRATION", `migration version ${version} is not positive`);
    if (seen.has(version)) throw new GatewayError("INVALID_MIGRATION", `migration version ${version} is given twice`);
    seen.add(version);
    if (!NAME.test(name)) throw new GatewayError("INVALID_MIGRATION", `migration ${version}: the name must be 1 to 100 letters, digits or underscores`);
    if (sql.trim() === "") throw new GatewayError("INVALID_MIGRATION", `migration ${version} (${name}) has no SQL`);
    bytes += Buffer.byteLength(sql);
    const firstLine = sql.split("\n", 1)[0]!.trim();
    return { version, name, sql, checksum: createHash("sha256").update(sql).digest("hex"), transactional: !NO_TRANSACTION.test(firstLine) };
  });
  if (bytes > MAX_TOTAL_SQL_BYTES) throw new GatewayError("INVALID_MIGRATION", `the migrations' SQL is over ${MAX_TOTAL_SQL_BYTES / 1024 / 1024} MiB`);
  return set.sort((a, b) => (a.version < b.version ? -1 : 1));
}

/** What a database has recorded, by version. */
export type Recorded = ReadonlyMap<bigint, { name: string; checksum: string }>;

/** What a database needs: the migrations to apply, in order, or why it has drifted (nothing applied then). */
export function plan(set: readonly Migration[], recorded: Recorded): { pending: Migration[] } | { drift: string } {
  const byVersion = new Map(set.map((m) => [m.version, m]));
  for (const [version, record] of recorded) {
    const migration = byVersion.get(version);
    if (migration === undefined) return { drift: `version ${version} (${record.name}) is recorded and is not among the migrations given` };
    if (migration.checksum !== record.checksum) return { drift: `version ${version} (${record.name}) was recorded with another checksum than its SQL's` };
  }
  const latest = [...recorded.keys()].reduce((a, b) => (b > a ? b : a), 0n);
  const pending = set.filter((m) => !recorded.has(m.version));
  const below = pending.find((m) => m.version < latest);
  if (below !== undefined) return { drift: `version ${below.version} (${below.name}) is missing below the latest recorded, ${latest}` };
  return { pending };
}

/** The schema of the record: owned by the gateway's owner role, so no tenant role can change it. */
export const MIGRATIONS_SCHEMA = "dbgateway";

/**
 * Sets up the record in a database, idempotently, run by an administrative
 * connection inside it as the owner role (so that the owner role owns every
 * object): the table of versions; the one-time tokens that let a migration
 * record itself from the tenant's own connection, in the migration's own
 * transaction; and the function that checks the token and records. The
 * tenant's role may read the versions and call the function, nothing more:
 * it cannot read a token, so it cannot record anything itself.
 */
const RECORD_SCHEMA = `
  CREATE SCHEMA IF NOT EXISTS ${MIGRATIONS_SCHEMA};
  CREATE TABLE IF NOT EXISTS ${MIGRATIONS_SCHEMA}.schema_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    duration_ms bigint NOT NULL,
    applied_by text NOT NULL
  );
  CREATE TABLE IF NOT EXISTS ${MIGRATIONS_SCHEMA}.migration_tokens (
    token text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
  );
  CREATE OR REPLACE FUNCTION ${MIGRATIONS_SCHEMA}.record_migration(token text, version bigint, name text, checksum text, duration_ms bigint, applied_by text)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  BEGIN
    IF NOT EXISTS (SELECT 1 FROM ${MIGRATIONS_SCHEMA}.migration_tokens t WHERE t.token = record_migration.token) THEN
      RAISE EXCEPTION 'only a migration run by db-gateway records itself' USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO ${MIGRATIONS_SCHEMA}.schema_migrations (version, name, checksum, duration_ms, applied_by)
      VALUES (record_migration.version, record_migration.name, record_migration.checksum, record_migration.duration_ms, record_migration.applied_by);
  END
  $$;
  REVOKE ALL ON SCHEMA ${MIGRATIONS_SCHEMA} FROM PUBLIC;
  REVOKE ALL ON ALL TABLES IN SCHEMA ${MIGRATIONS_SCHEMA} FROM PUBLIC;
  REVOKE ALL ON FUNCTION ${MIGRATIONS_SCHEMA}.record_migration(text, bigint, text, text, bigint, text) FROM PUBLIC;
  -- Tokens a run left behind when it stopped (a gateway killed): useless to anyone, removed.
  DELETE FROM ${MIGRATIONS_SCHEMA}.migration_tokens WHERE created_at < pg_catalog.now() - interval '1 day';
`;

/** The tenant role's rights on the record: run at set-up, and again when a database copied from a template gets its own role. */
export function recordGrants(role: string): string {
  const r = escapeIdentifier(role);
  return `
    GRANT USAGE ON SCHEMA ${MIGRATIONS_SCHEMA} TO ${r};
    GRANT SELECT ON ${MIGRATIONS_SCHEMA}.schema_migrations TO ${r};
    GRANT EXECUTE ON FUNCTION ${MIGRATIONS_SCHEMA}.record_migration(text, bigint, text, text, bigint, text) TO ${r};`;
}

/** Who owns the schema `dbgateway` of the database `inside` is connected to, if it exists. */
export async function recordOwner(inside: pg.ClientBase): Promise<string | undefined> {
  const { rows } = await inside.query<{ owner: string }>(
    "SELECT pg_catalog.pg_get_userbyid(nspowner) AS owner FROM pg_catalog.pg_namespace WHERE nspname = $1",
    [MIGRATIONS_SCHEMA],
  );
  return rows[0]?.owner;
}

/** The set-up, as `owner` (one transaction, so that `owner` owns every object; the caller holds the database's migration lock). */
export function recordSetup(owner: string, role: string): string {
  return `BEGIN; SET LOCAL ROLE ${escapeIdentifier(owner)}; ${RECORD_SCHEMA} ${recordGrants(role)} COMMIT;`;
}
