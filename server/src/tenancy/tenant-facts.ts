// What the catalog keeps of each tenant database for ListTenants: the schema version its last migration run left, and its last backup.
import type pg from "pg";
import { applySchema } from "../audit/catalog.js";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS public.tenant_fact (
    database text PRIMARY KEY,
    schema_version bigint,
    last_backup timestamptz
  );
  REVOKE ALL ON public.tenant_fact FROM PUBLIC;
`;

export interface StoredFacts {
  schemaVersion?: bigint;
  lastBackup?: Date;
}

/**
 * Facts about tenant databases that would otherwise take a connection into
 * each (the version is recorded inside the database itself): written by
 * Migrate, RestoreTenant, ForkTenant and Backup as they learn them, so that a
 * page of ListTenants reads one table. A database changed by other means shows
 * what the gateway last saw.
 */
export class TenantFactStore {
  private constructor(private readonly catalog: pg.Pool) {}

  static async open(catalog: pg.Pool): Promise<TenantFactStore> {
    await applySchema(catalog, "tenant facts", SCHEMA);
    return new TenantFactStore(catalog);
  }

  async noteVersion(database: string, version: bigint): Promise<void> {
    await this.catalog.query(
      "INSERT INTO public.tenant_fact (database, schema_version) VALUES ($1, $2) ON CONFLICT (database) DO UPDATE SET schema_version = EXCLUDED.schema_version",
      [database, version.toString()],
    );
  }

  async noteBackup(database: string, at: Date): Promise<void> {
    await this.catalog.query(
      "INSERT INTO public.tenant_fact (database, last_backup) VALUES ($1, $2) ON CONFLICT (database) DO UPDATE SET last_backup = GREATEST(tenant_fact.last_backup, EXCLUDED.last_backup)",
      [database, at],
    );
  }

  async read(databases: readonly string[]): Promise<Map<string, StoredFacts>> {
    const { rows } = await this.catalog.query<{ database: string; schema_version: string | null; last_backup: Date | null }>(
      "SELECT database, schema_version::text, last_backup FROM public.tenant_fact WHERE database = ANY($1::text[])",
      [databases],
    );
    return new Map(
      rows.map((r) => [
        r.database,
        { ...(r.schema_version !== null ? { schemaVersion: BigInt(r.schema_version) } : {}), ...(r.last_backup !== null ? { lastBackup: r.last_backup } : {}) },
      ]),
    );
  }

  /** A dropped database's facts: a tenant created again under its name starts with none. */
  async forget(database: string): Promise<void> {
    await this.catalog.query("DELETE FROM public.tenant_fact WHERE database = $1", [database]);
  }
}
