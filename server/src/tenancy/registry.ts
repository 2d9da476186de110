// The databases that exist, read from pg_database and kept current, so that routing answers NOT_FOUND without a connection attempt.
import type pg from "pg";
import { parseDatabaseName, type ParsedDatabaseName } from "./naming.js";

/** Where the registry reads pg_database: the administrative pool. */
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
 * The set of databases that exist, read from `pg_database` at start, kept
 * current by tenant creation and removal, and refreshed periodically and on
 * a miss so that databases created or dropped by another gateway instance or
 * out of band are seen. Routing consults it so that a call for a missing
 * tenant is NOT_FOUND without a connection attempt.
 */
export class DatabaseRegistry {
  #names = new Set<string>();

  /** Replaces the contents with the databases that exist now, and says what changed. */
  async refresh(admin: Queryable): Promise<RegistryChanges> {
    // datconnlimit -2: a database DROP DATABASE has begun to remove (or left half-removed); its row stays visible until the drop commits.
    const result = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datallowconn AND datconnlimit <> -2");
    const names = new Set(result.rows.map((r) => r.datname));
    const added = [...names].filter((n) => !this.#names.has(n));
    const removed = [...this.#names].filter((n) => !names.has(n));
    this.#names = names;
    return { added, removed };
  }

  /** Every database name known now. */
  names(): string[] {
    return [...this.#names];
  }

  has(name: string): boolean {
    return this.#names.has(name);
  }

  add(name: string): void {
    this.#names.add(name);
  }

  delete(name: string): void {
    this.#names.delete(name);
  }

  /** The databases of the given platforms (all parseable ones when undefined), sorted by name. */
  list(platforms?: ReadonlySet<string>): RegisteredDatabase[] {
    const found: RegisteredDatabase[] = [];
    for (const name of this.#names) {
      const parsed = parseDatabaseName(name);
      if (parsed !== undefined && (platforms === undefined || platforms.has(parsed.platform))) found.push({ name, ...parsed });
    }
    return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}
