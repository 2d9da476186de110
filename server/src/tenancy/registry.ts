// The databases that exist on each cluster, read from their pg_database and kept current, so that routing answers NOT_FOUND without a connection attempt and knows where each one is.
import type pg from "pg";
import { parseDatabaseName, type ParsedDatabaseName } from "./naming.js";

/** Where the registry reads pg_database: a cluster's administrative pool. */
type Queryable = Pick<pg.Pool, "query">;

/** A database the gateway routes to, with the parts of its name. */
export interface RegisteredDatabase extends ParsedDatabaseName {
  name: string;
}

/** What a refresh found changed. */
export interface RegistryChanges {
  added: string[];
  removed: string[];
}

/**
 * The set of databases that exist on each cluster, read from `pg_database`
 * at start, kept current by tenant creation and removal, and refreshed
 * periodically and on a miss so that databases created or dropped by another
 * gateway instance or out of band are seen. Routing consults it so that a
 * call for a missing tenant is NOT_FOUND without a connection attempt, and so
 * that it knows which cluster to connect to: the one the catalog's placement
 * names (`place`) when that cluster holds the database (a tenant being moved
 * exists on two), else the first cluster, in the order they were first
 * refreshed, that holds it.
 */
export class DatabaseRegistry {
  readonly #byCluster = new Map<string, Set<string>>();
  #placements: ReadonlyMap<string, string> = new Map();

  /** Replaces what `cluster` holds with the databases that exist there now, and says what changed. */
  async refresh(admin: Queryable, cluster: string): Promise<RegistryChanges> {
    // datconnlimit -2: a database DROP DATABASE has begun to remove (or left half-removed); its row stays visible until the drop commits.
    const result = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datallowconn AND datconnlimit <> -2");
    const names = new Set(result.rows.map((r) => r.datname));
    const before = this.#byCluster.get(cluster) ?? new Set<string>();
    const added = [...names].filter((n) => !before.has(n));
    const removed = [...before].filter((n) => !names.has(n));
    this.#byCluster.set(cluster, names);
    return { added, removed };
  }

  /** Takes the catalog's placements (database → cluster): where a database on several clusters is served from. */
  place(placements: ReadonlyMap<string, string>): void {
    this.#placements = placements;
  }

  /** The cluster a database is served from, or undefined when no cluster holds it. */
  clusterOf(name: string): string | undefined {
    const placed = this.#placements.get(name);
    if (placed !== undefined && this.#byCluster.get(placed)?.has(name) === true) return placed;
    for (const [cluster, names] of this.#byCluster) if (names.has(name)) return cluster;
    return undefined;
  }

  /** Every database name known now. */
  names(): string[] {
    const all = new Set<string>();
    for (const names of this.#byCluster.values()) for (const name of names) all.add(name);
    return [...all];
  }

  /** The databases a cluster holds. */
  namesOn(cluster: string): string[] {
    return [...(this.#byCluster.get(cluster) ?? [])];
  }

  has(name: string): boolean {
    for (const names of this.#byCluster.values()) if (names.has(name)) return true;
    return false;
  }

  add(name: string, cluster: string): void {
    let names = this.#byCluster.get(cluster);
    if (names === undefined) this.#byCluster.set(cluster, (names = new Set()));
    names.add(name);
  }

  /** Forgets a database on one cluster. */
  delete(name: string, cluster: string): void {
    this.#byCluster.get(cluster)?.delete(name);
  }

  /** The databases of the given platforms (all parseable ones when undefined), sorted by name. */
  list(platforms?: ReadonlySet<string>): RegisteredDatabase[] {
    const found: RegisteredDatabase[] = [];
    for (const name of this.names()) {
      const parsed = parseDatabaseName(name);
      if (parsed !== undefined && (platforms === undefined || platforms.has(parsed.platform))) found.push({ name, ...parsed });
    }
    return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}
