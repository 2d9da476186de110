// Which cluster each tenant database is placed on, kept in the gateway's catalog so that every instance serves a database from the same cluster.
import pg from "pg";
import { applySchema } from "../audit/catalog.js";

/** The catalog's channel on which a tenant's creation, drop or move is announced (its payload: the database's name). */
export const TENANT_CHANGES_CHANNEL = "dbgateway_tenant_changes";
/** After a lost listening connection, how long before the next try. */
const RELISTEN_MILLIS = 1_000;

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

  /** The cluster a database is placed on, or undefined when it has no placement. */
  async clusterOf(database: string): Promise<string | undefined> {
    const { rows } = await this.catalog.query<{ cluster: string }>("SELECT cluster FROM public.tenant_placement WHERE database = $1", [database]);
    return rows[0]?.cluster;
  }

  /** Places a database on a cluster, replacing where it was placed before. */
  async place(database: string, cluster: string): Promise<void> {
    await this.catalog.query(
      `WITH placed AS (
         INSERT INTO public.tenant_placement (database, cluster) VALUES ($1, $2)
         ON CONFLICT (database) DO UPDATE SET cluster = excluded.cluster, placed_at = clock_timestamp() RETURNING database
       ) SELECT pg_notify($3, database) FROM placed`,
      [database, cluster, TENANT_CHANGES_CHANNEL],
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
    await this.catalog.query(
      "WITH gone AS (DELETE FROM public.tenant_placement WHERE database = $1 AND cluster = $2 RETURNING database) SELECT pg_notify($3, database) FROM gone",
      [database, cluster, TENANT_CHANGES_CHANNEL],
    );
  }
}

/**
 * Listens on the catalog for tenant changes made through any gateway
 * (`TENANT_CHANGES_CHANNEL`) and calls `onChange` for each, so that a tenant
 * created, dropped or moved elsewhere is seen here within moments rather
 * than at the next registry refresh. A lost connection is made again after a
 * second (changes made meanwhile are seen by the refresh). Returns what stops it.
 */
export function followTenantChanges(connection: pg.ClientConfig, onChange: (database: string) => void, onError: (err: unknown) => void): () => Promise<void> {
  let client: pg.Client | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const listen = async () => {
    const c = new pg.Client({ ...connection, application_name: "db-gateway-changes" });
    client = c;
    const again = (err: unknown) => {
      if (client !== c || stopped) return;
      client = undefined;
      onError(err);
      void c.end().catch(() => undefined);
      retry = setTimeout(() => void listen(), RELISTEN_MILLIS);
      retry.unref();
    };
    c.on("error", again);
    c.on("end", () => again(new Error("the catalog's listening connection ended")));
    c.on("notification", (n) => {
      if (n.channel === TENANT_CHANGES_CHANNEL && n.payload !== undefined) onChange(n.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${pg.escapeIdentifier(TENANT_CHANGES_CHANNEL)}`);
    } catch (err) {
      again(err);
    }
  };
  void listen();
  return async () => {
    stopped = true;
    clearTimeout(retry);
    await client?.end().catch(() => undefined);
  };
}
