import pg from "pg";
import { DatabaseError } from "pg";
import { GatewayError, leavesConnectionUsable } from "../errors.js";

/** Options shared by every per-database pool. */
export interface PoolMapOptions {
  /** Connection settings of the gateway's role: host, port, user, password, ssl. The database is set per pool. */
  connection: pg.ClientConfig;
  maxConnectionsPerPool: number;
  idleTimeoutMillis: number;
  /** Called with errors of idle connections (a restarted server, a killed backend). */
  onIdleError?: (database: string, err: Error) => void;
}

/**
 * Every result value stays PostgreSQL's text form: the gateway passes it
 * through instead of parsing and re-encoding it (exact and cheaper).
 */
const TEXT_PASSTHROUGH = { getTypeParser: () => (value: string) => value };

/**
 * A lazily filled map from database name to a `pg.Pool`. Deliberately simple:
 * the production pool manager (global cap, fairness, eviction) replaces it.
 */
export class PoolMap {
  readonly #pools = new Map<string, pg.Pool>();

  constructor(private readonly options: PoolMapOptions) {}

  /** The pool of a database, created on first use. */
  get(database: string): pg.Pool {
    let pool = this.#pools.get(database);
    if (pool === undefined) {
      pool = new pg.Pool({
        ...this.options.connection,
        database,
        max: this.options.maxConnectionsPerPool,
        idleTimeoutMillis: this.options.idleTimeoutMillis,
        types: TEXT_PASSTHROUGH,
        application_name: "db-gateway",
      });
      pool.on("error", (err) => this.options.onIdleError?.(database, err));
      this.#pools.set(database, pool);
    }
    return pool;
  }

  /**
   * Runs `fn` on a connection of the database's pool and releases it after.
   * Failing to connect is DATABASE_UNAVAILABLE with nothing of PostgreSQL's
   * message (it may name users or hosts). A connection whose statement
   * failed with anything but an ordinary ERROR is destroyed, not reused.
   */
  async withConnection<T>(database: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.get(database).connect();
    } catch (err) {
      if (err instanceof DatabaseError && err.code === "3D000") {
        // Dropped behind our back (or while this call was being routed): forget its pool.
        void this.close(database).catch(() => undefined);
        throw new GatewayError("DATABASE_NOT_FOUND", `database "${database}" does not exist`, { metadata: { database }, cause: err });
      }
      throw new GatewayError("DATABASE_UNAVAILABLE", `database "${database}" is unavailable`, { metadata: { database }, cause: err });
    }
    let result: T;
    try {
      result = await fn(client);
    } catch (err) {
      client.release(leavesConnectionUsable(err) ? undefined : (err as Error));
      throw err;
    }
    // A statement may have opened a transaction (BEGIN); such a connection must not serve the next call.
    client.release(client.getTransactionStatus() === "I" ? undefined : new Error("connection left inside a transaction"));
    return result;
  }

  /** Removes a database's pool and closes its connections once they are released. */
  close(database: string): Promise<void> {
    const pool = this.#pools.get(database);
    if (pool === undefined) return Promise.resolve();
    this.#pools.delete(database);
    return pool.end();
  }

  /** Closes every pool. */
  async closeAll(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.end()));
  }
}
