// Which cluster each tenant database is placed on, kept in the gateway's catalog so that every instance serves a database from the same cluster.
import type pg from "pg";
import { applySchema } from "../audit/catalog.js";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS public.tenant_placement (
    database text PRIMARY KEY,
    cluster text NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT clock_timestamp()
  );
  REVOKE ALL ON public.tenant_placement FROM PUBLIC;
`;

/**
 * The `tenant_placement` table of the catalog: one row per database the
 * gateway created, adopted or moved, naming its cluster. A database that
 * exists on two clusters (a move under way, or one made out of band) is
 * served from the cluster its row names.
 */
export class PlacementStore {
  private constructor(private readonly catalog: pg.Pool) {}

  /** Sets up the table in the catalog (see catalog.ts) if needed. */
  static async open(catalog: pg.Pool): Promise<PlacementStore> {
    await applySchema(catalog, "tenant placements", SCHEMA);
    return new PlacementStore(catalog);
  }

  /** Every placement: database → cluster. */
  async all(): Promise<Map<string, string>> {
    const { rows } = await this.catalog.query<{ database: string; cluster: string }>("SELECT database, cluster FROM public.tenant_placement");
    return new Map(rows.map((r) => [r.database, r.cluster]));
  }

  /** Places a database on a cluster, replacing where it was placed before. */
  async place(database: string, cluster: string): Promise<void> {
    await this.catalog.query(
      `INSERT INTO public.tenant_placement (database, cluster) VALUES ($1, $2)
       ON CONFLICT (database) DO UPDATE SET cluster = excluded.cluster, placed_at = clock_timestamp()`,
      [database, cluster],
    );
  }

  /** Records where databases found on a cluster are, for those with no placement yet. */
  async placeUnplaced(databases: readonly string[], cluster: string): Promise<void> {
    if (databases.length === 0) return;
    await this.catalog.query(
      `INSERT INTO public.tenant_placement (database, cluster) SELECT d, $2 FROM unnest($1::text[]) AS d ON CONFLICT (database) DO NOTHING`,
      [databases, cluster],
    );
  }

  /** Forgets a dropped database's placement, if it still names that cluster. */
  async forget(database: string, cluster: string): Promise<void> {
    await this.catalog.query("DELETE FROM public.tenant_placement WHERE database = $1 AND cluster = $2", [database, cluster]);
  }
}
