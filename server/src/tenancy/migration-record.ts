// Each database's record of its migrations, schema dbgateway: the owner role's alone, read by the tenant's role, written by a migration only with a one-time token, and never touched by the gateway before it is checked to be the owner role's.
import type pg from "pg";
import { escapeIdentifier } from "pg";
import { GatewayError } from "../errors.js";
import { OWNER_ROLE } from "./naming.js";

/** The schema of the record. */
export const MIGRATIONS_SCHEMA = "dbgateway";

/** A migration as a database recorded it (its values as text, as PostgreSQL prints them). */
export interface RecordedMigration {
  version: string;
  name: string;
  checksum: string;
  applied_at: string;
  duration_ms: string;
  applied_by: string;
}

const S = MIGRATIONS_SCHEMA;
const RECORD_FUNCTION = `${S}.record_migration(text, bigint, text, text, bigint, text)`;

/**
 * The record's objects, made by the owner role: the table of versions; the
 * one-time tokens that let a migration record itself from the tenant's own
 * connection, in the migration's own transaction; and the function that
 * checks the token and records. `CREATE SCHEMA` without `IF NOT EXISTS`: a
 * schema made by anyone else first fails it.
 */
const CREATE_RECORD = `
  CREATE SCHEMA ${S};
  CREATE TABLE ${S}.schema_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    duration_ms bigint NOT NULL,
    applied_by text NOT NULL
  );
  CREATE TABLE ${S}.migration_tokens (
    token text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
  );
  CREATE FUNCTION ${S}.record_migration(token text, version bigint, name text, checksum text, duration_ms bigint, applied_by text)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  BEGIN
    IF NOT EXISTS (SELECT 1 FROM ${S}.migration_tokens t WHERE t.token = record_migration.token) THEN
      RAISE EXCEPTION 'only a migration run by db-gateway records itself' USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO ${S}.schema_migrations (version, name, checksum, duration_ms, applied_by)
      VALUES (record_migration.version, record_migration.name, record_migration.checksum, record_migration.duration_ms, record_migration.applied_by);
  END
  $$;
  REVOKE ALL ON FUNCTION ${RECORD_FUNCTION} FROM PUBLIC;
`;

/**
 * Whether the record is there and entirely the owner role's: the schema,
 * everything in it, and no trigger, rule or policy on its tables (which the
 * owner role never makes, and which would run someone's code as whoever
 * writes to them). "absent" when there is no schema dbgateway;
 * MIGRATION_SCHEMA_CONFLICT when there is one and it is not all the owner role's.
 */
export async function recordState(inside: pg.ClientBase, database: string): Promise<"absent" | "ours"> {
  const { rows } = await inside.query<{ owner: string; foreign: number }>(
    `SELECT pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
            (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relowner OPERATOR(pg_catalog.<>) n.nspowner)::int
          + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid AND p.proowner OPERATOR(pg_catalog.<>) n.nspowner)::int
          + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type t WHERE t.typnamespace = n.oid AND t.typowner OPERATOR(pg_catalog.<>) n.nspowner)::int
          + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid WHERE c.relnamespace = n.oid)::int
          + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = n.oid)::int
          + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = n.oid)::int
            AS foreign
       FROM pg_catalog.pg_namespace n WHERE n.nspname = $1`,
    [S],
  );
  const found = rows[0];
  if (found === undefined) return "absent";
  if (found.owner !== OWNER_ROLE || found.foreign !== 0) {
    throw new GatewayError("MIGRATION_SCHEMA_CONFLICT", `the schema "${S}" of ${database} is not db-gateway's alone (its owner: "${found.owner}")`, {
      metadata: { database },
    });
  }
  return "ours";
}

/**
 * Makes the record, or checks it is the owner role's, as the owner role and
 * in one transaction; gives `role` (the database's) its rights on it, and
 * removes tokens a stopped run left behind.
 */
export async function ensureRecord(inside: pg.ClientBase, database: string, role: string): Promise<void> {
  await asOwner(inside, async () => {
    if ((await recordState(inside, database)) === "absent") {
      await inside.query(CREATE_RECORD);
      await grantOnly(inside, role);
    } else {
      // Given at creation, and to a copy's role when it is made (resetRecordGrants): again only where that was missed.
      const { rows } = await inside.query<{ granted: boolean }>("SELECT pg_catalog.has_schema_privilege($1, $2, 'USAGE') AS granted", [role, S]);
      if (!rows[0]!.granted) await grantOnly(inside, role);
    }
    // Tokens of a run that stopped (a gateway killed): useless to anyone, removed.
    await inside.query(`DELETE FROM ${S}.migration_tokens WHERE created_at < pg_catalog.now() - interval '1 hour'`);
  });
}

/** For a copy of a template: when it has the record, `role` may read it, and the template's role no longer. Inside the caller's transaction. */
export async function resetRecordGrants(inside: pg.ClientBase, role: string): Promise<void> {
  const { rowCount } = await inside.query("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1 AND pg_catalog.pg_get_userbyid(nspowner) = $2", [
    S,
    OWNER_ROLE,
  ]);
  if (rowCount === 0) return;
  await inside.query(`SET LOCAL ROLE ${escapeIdentifier(OWNER_ROLE)}`);
  await grantOnly(inside, role);
  await inside.query("RESET ROLE");
}

/** The versions recorded (the record checked to be the owner role's). */
export async function readRecord(inside: pg.ClientBase): Promise<RecordedMigration[]> {
  const { rows } = await inside.query<RecordedMigration>(
    `SELECT version::text, name, checksum, pg_catalog.to_json(applied_at) #>> '{}' AS applied_at, duration_ms::text, applied_by
       FROM ${S}.schema_migrations ORDER BY version`,
  );
  return rows;
}

/** Adds a token for a run's migrations to record themselves with, as the owner role. */
export async function issueToken(inside: pg.ClientBase, token: string): Promise<void> {
  await asOwner(inside, () => inside.query(`INSERT INTO ${S}.migration_tokens (token) VALUES ($1)`, [token]));
}

export async function revokeToken(inside: pg.ClientBase, token: string): Promise<void> {
  await asOwner(inside, () => inside.query(`DELETE FROM ${S}.migration_tokens WHERE token = $1`, [token]));
}

/** Records migrations restored from a backup, as the owner role. */
export async function insertRecord(inside: pg.ClientBase, migrations: readonly RecordedMigration[]): Promise<void> {
  await asOwner(inside, () =>
    inside.query(
      `INSERT INTO ${S}.schema_migrations (version, name, checksum, applied_at, duration_ms, applied_by)
       SELECT * FROM pg_catalog.jsonb_to_recordset($1::jsonb) AS r(version bigint, name text, checksum text, applied_at timestamptz, duration_ms bigint, applied_by text)`,
      [JSON.stringify(migrations)],
    ),
  );
}

/** Runs `fn` in a transaction as the owner role. */
async function asOwner<T>(inside: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await inside.query("BEGIN");
  try {
    await inside.query(`SET LOCAL ROLE ${escapeIdentifier(OWNER_ROLE)}`);
    const result = await fn();
    await inside.query("COMMIT");
    return result;
  } catch (err) {
    await inside.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

/** Every right on the record taken from whoever had one, then `role`'s given: read the versions, call the function. As the owner role. */
async function grantOnly(inside: pg.ClientBase, role: string): Promise<void> {
  await inside.query(`
    DO $$
    DECLARE r record;
    BEGIN
      FOR r IN
        SELECT DISTINCT a.grantee::pg_catalog.regrole::text AS grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
         WHERE n.nspname = '${S}' AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
        UNION SELECT DISTINCT a.grantee::pg_catalog.regrole::text FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.relnamespace = '${S}'::pg_catalog.regnamespace AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
        UNION SELECT DISTINCT a.grantee::pg_catalog.regrole::text FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.pronamespace = '${S}'::pg_catalog.regnamespace AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
      LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA ${S} FROM %s', r.grantee);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA ${S} FROM %s', r.grantee);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ${S} FROM %s', r.grantee);
      END LOOP;
    END $$`);
  const r = escapeIdentifier(role);
  await inside.query(`
    REVOKE ALL ON SCHEMA ${S} FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA ${S} FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ${S} FROM PUBLIC;
    GRANT USAGE ON SCHEMA ${S} TO ${r};
    GRANT SELECT ON ${S}.schema_migrations TO ${r};
    GRANT EXECUTE ON FUNCTION ${RECORD_FUNCTION} TO ${r};`);
}
