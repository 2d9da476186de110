// What the pool manager is given: its settings, and what each call brings (its deadline and cancellation).
import type pg from "pg";

/** Settings of the pool manager; every duration is in milliseconds. */
export interface PoolManagerOptions {
  /** Connection settings for a database: host, port, and the credentials of that database's own role. */
  connectionFor(database: string): pg.ClientConfig;
  /** Most connections one database's pool holds (connecting, idle and busy). */
  maxConnectionsPerPool: number;
  /** Most connections of all pools together: never exceeded. */
  maxTotalConnections: number;
  /** Most pools that keep connections; least recently used idle pools are closed beyond it. */
  maxPools: number;
  /** Most calls waiting for one database's connection; more fail at once with TOO_MANY_WAITERS. */
  maxWaitersPerPool: number;
  /** Longest wait for a connection (a call's deadline may shorten it); then POOL_EXHAUSTED. */
  acquireTimeoutMillis: number;
  /** A pool unused this long is closed with all its connections. */
  poolIdleTimeoutMillis: number;
  /** An idle connection beyond a pool's one warm connection is closed after this long. */
  connectionIdleTimeoutMillis: number;
  /** A connection older than this is closed when it is next idle. */
  maxLifetimeMillis: number;
  /** A connection idle longer than this is checked with a round trip before it is used. */
  validateAfterIdleMillis: number;
  /**
   * At the cap, how long a database's oldest caller waits for one of its own
   * busy connections before another database's idle one is closed to open one
   * more for it (default `STEAL_AFTER_WAIT_MILLIS` of scheduler.ts).
   */
  stealAfterWaitMillis?: number;
  /** How often timeouts and limits are enforced. */
  reapIntervalMillis: number;
  /** After an interruption, how long the backend has to end its statement before its connection is destroyed. */
  cancelGraceMillis: number;
  /** Errors worth an operator's attention (a failing idle connection, a failed reset). */
  onError?(database: string, err: unknown): void;
  /** Told how long each call waited for its connection to a database (0 for a hit): the wait-time histogram, calls per database. */
  onAcquired?(waitMillis: number, database: string): void;
  /**
   * A database's share of the cap (quotas), read when its pool is made and on
   * `PoolManager.reshare`: at most `maxConnections` of its own (never above
   * `maxConnectionsPerPool`), and at most `group.maxConnections` for all the
   * pools of its group (a platform's) together. Without it, every pool may
   * hold `maxConnectionsPerPool`.
   */
  shareOf?(database: string): ConnectionShare;
  /**
   * The cluster a database's connections go to, and the most connections the
   * gateway holds to that cluster, read when its pool is made (a database
   * moved to another cluster gets a new pool: see `PoolManager.close`).
   * Without it, every pool counts against the global cap only.
   */
  clusterOf?(database: string): { name: string; maxConnections: number } | undefined;
  /**
   * Admits a call to a database before it asks for a connection (quotas):
   * throws to refuse it, or returns what to call once the call is over.
   */
  admit?(database: string): () => void;
  /**
   * Holds a call to a database before anything else (a tenant being moved):
   * a promise the call waits for, within its deadline, or undefined to go on
   * at once. A rejection fails the call before its statement is sent.
   */
  hold?(database: string, limits: CallLimits): Promise<void> | undefined;
}

/** What `PoolManagerOptions.shareOf` says of a database. */
export interface ConnectionShare {
  maxConnections: number;
  group?: { name: string; maxConnections: number };
}

/** Connections of a group of pools (a platform's, or a cluster's), under a limit of their own. */
export interface ConnectionGroup {
  readonly name: string;
  maxConnections: number;
  /** Connections of its pools: connecting, idle and busy. */
  size: number;
  /** Connections of its pools closed and not yet gone (they count, as against the global cap). */
  closing: number;
}

/** What a call brings to the pool: its deadline (epoch ms, Infinity for none) and cancellation. */
export interface CallLimits {
  deadline: number;
  signal?: AbortSignal;
  /** Admitted already (queries sent together, by their quotas), or the gateway's own use: not subject to `admit`. */
  unmetered?: boolean;
  /**
   * Held for as long as the gateway needs it (a LISTEN connection): not there
   * for calls, so a pool whose connections are all held counts as having none
   * when the scheduler decides who is starving.
   */
  held?: boolean;
}
