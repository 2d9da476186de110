// One database's pool as the scheduler keeps it (its connections, the calls waiting for one, its counters and PostgreSQL's refusals), and how its clients are made and closed.
import pg, { type DatabaseError } from "pg";
import { GatewayError } from "../errors.js";
import { passDataRowBytes } from "./data-row-parser.js";
import { destroyConnection } from "./pg-internals.js";
import { newPoolCounters, type PoolStats } from "./pool-stats.js";
import type { ConnectionGroup } from "./pool-options.js";

/** An open connection of a pool. */
export interface Connection {
  readonly client: pg.Client;
  readonly pool: DatabasePool;
  readonly createdAt: number;
  idleSince: number;
}

/** A call waiting for a connection. */
export interface Waiter {
  readonly seq: number;
  /** When it began to wait (performance.now(): monotonic). */
  readonly since: number;
  resolve(connection: Connection): void;
  reject(err: GatewayError): void;
}

/** PostgreSQL's too_many_connections: a role's CONNECTION LIMIT, or the server's max_connections. */
export const TOO_MANY_CONNECTIONS = "53300";

/** After PostgreSQL refuses a connection, how long before the next try; doubled on each refusal, up to the most. */
const REFUSED_BACKOFF_MILLIS = 50;
const REFUSED_BACKOFF_MAX_MILLIS = 1_000;

/**
 * The only result parser: every value stays PostgreSQL's text form, which the
 * gateway passes through instead of parsing and re-encoding it.
 */
export const TEXT_PASSTHROUGH = { getTypeParser: () => (value: string) => value };

/** One database's pool: the scheduler hands out its connections and queues its waiting calls, `Pools` opens and closes its connections. */
export class DatabasePool {
  readonly idle: Connection[] = []; // most recently used last
  readonly busy = new Set<Connection>();
  connecting = 0;
  /** Connections of other pools being closed to make room for this one (at most one at a time). */
  freeing = 0;
  /** Busy connections held for the gateway's own long use (see `CallLimits.held`). */
  held = 0;
  readonly waiters: Waiter[] = [];
  readonly counters = newPoolCounters();
  lastUsedAt = Date.now();
  /** Taken out of the manager's pools (closed, evicted, its database gone): its connections are closed as they come back. */
  retired = false;
  /** While PostgreSQL refuses this database more connections (53300): no new one is tried before `until` (performance.now()). */
  refused: { at: number; until: number; backoffMillis: number; error: DatabaseError } | undefined;
  constructor(
    readonly database: string,
    /** Most connections it holds (its share of the cap: see `PoolManagerOptions.shareOf`). */
    public maxSize: number,
    /** The group whose limit it shares, if any. */
    public group: ConnectionGroup | undefined,
    /** Its cluster's connections, when the cluster has a limit of its own. */
    readonly cluster: ConnectionGroup | undefined = undefined,
  ) {}

  get size(): number {
    return this.idle.length + this.busy.size + this.connecting;
  }

  /** Its connections there for calls: all but those held (a LISTEN connection). */
  get serving(): number {
    return this.size - this.held;
  }

  /** Whether the database waits out a backoff after PostgreSQL refused it a connection (see `refused`). */
  inBackoff(now: number): boolean {
    return this.refused !== undefined && now < this.refused.until;
  }

  /**
   * Notes that PostgreSQL refused a connection at `now` (53300): refusals of
   * one round of opens (its backoff not over yet) count once, and each
   * round's backoff is twice the last one's. True for the first refusal since
   * a connection was last opened.
   */
  refuse(err: DatabaseError, now: number): boolean {
    const previous = this.refused;
    if (previous !== undefined && this.inBackoff(now)) {
      this.refused = { ...previous, at: now, error: err };
    } else {
      const backoffMillis = previous === undefined ? REFUSED_BACKOFF_MILLIS : Math.min(2 * previous.backoffMillis, REFUSED_BACKOFF_MAX_MILLIS);
      this.refused = { at: now, until: now + backoffMillis, backoffMillis, error: err };
    }
    return previous === undefined;
  }

  /** POOL_EXHAUSTED for a caller that began to wait at `since` (performance.now()); it says so if PostgreSQL refused a connection meanwhile. */
  exhausted(since: number): GatewayError {
    const database = this.database;
    if (this.refused !== undefined && this.refused.at >= since) {
      return new GatewayError(
        "POOL_EXHAUSTED",
        // Its SQLSTATE, not its words: they name roles and limits (and DATABASE_ERROR_TEXT may withhold PostgreSQL's text).
        `no connection to "${database}" became free in time, and PostgreSQL refused more (SQLSTATE ${TOO_MANY_CONNECTIONS}: too many connections)`,
        {
          metadata: { database, sqlstate: TOO_MANY_CONNECTIONS },
        },
      );
    }
    return new GatewayError("POOL_EXHAUSTED", `no connection to "${database}" became free in time`, { metadata: { database } });
  }

  /** Its counters and gauges now. */
  stats(): PoolStats {
    const { database, size, connecting, lastUsedAt } = this;
    return { database, size, connecting, idle: this.idle.length, busy: this.busy.size, waiting: this.waiters.length, lastUsedAt, ...this.counters };
  }
}

/** A client (not yet connected) with the gateway's settings: text results passed through, data rows kept raw. */
export function newClient(config: pg.ClientConfig): pg.Client {
  const client = new pg.Client({ ...config, types: TEXT_PASSTHROUGH, application_name: "db-gateway", keepAlive: true });
  passDataRowBytes(client);
  return client;
}

/** Closes a connection's client: says goodbye, or with `force` drops the socket (pg's end waits for queries a stuck backend may never answer). */
export function closeClient(client: pg.Client, force: boolean): Promise<void> {
  if (!force) return client.end().catch(() => undefined);
  client.on("error", () => undefined);
  destroyConnection(client);
  return Promise.resolve();
}
