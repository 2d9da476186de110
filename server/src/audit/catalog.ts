// The gateway's own catalog database (the audit trail, the quotas): created once, reached through a small pool of the administrative role.
import pg from "pg";

/**
 * The default name of the gateway's own catalog database (CATALOG_DATABASE).
 * The platform "dbgateway" is reserved (see config.ts), so no tenant database
 * can be called this.
 */
export const DEFAULT_CATALOG_DATABASE = "dbgateway_catalog";

/**
 * Creates the catalog database if needed (no PUBLIC access) and connects to
 * it with the administrative role's settings. Safe when several gateway
 * instances start at once.
 */
export async function openCatalog(admin: pg.Pool, connection: pg.ClientConfig, database: string): Promise<pg.Pool> {
  const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]);
  if (exists.rowCount === 0) {
    try {
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(database)}`);
      await admin.query(`REVOKE ALL ON DATABASE ${pg.escapeIdentifier(database)} FROM PUBLIC`);
    } catch (err) {
      // Another instance created it first: 42P04 duplicate_database, or a unique violation in pg_database.
      if (!(err instanceof pg.DatabaseError && (err.code === "42P04" || err.code === "23505"))) throw err;
    }
  }
  const pool = new pg.Pool({ ...connection, database, max: 3, application_name: "db-gateway-catalog" });
  pool.on("error", () => undefined); // an idle connection lost: the next query opens another
  return pool;
}

/** Runs an idempotent schema script in one transaction, one instance at a time (an advisory lock named after `what`). */
export async function applySchema(catalog: pg.Pool, what: string, schema: string): Promise<void> {
  const client = await catalog.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`db-gateway ${what} schema`]);
    await client.query(schema);
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    client.release(true);
    throw err;
  }
  client.release();
}
