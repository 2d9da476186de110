// The pools' statistics: what each database's pool counts (and the gateway's totals, counted alongside), and the gauges read with them.

/** What one database's pool counts over its life. */
export interface PoolCounters {
  /** Calls served at once by an idle connection. */
  hits: number;
  /** Calls that had to wait for a connection to be opened or released. */
  misses: number;
  /** Calls that gave up waiting: POOL_EXHAUSTED. */
  timeouts: number;
  /** Calls refused because too many were waiting: TOO_MANY_WAITERS. */
  rejected: number;
  /** Connections opened, and closed (for any reason). */
  opened: number;
  closed: number;
  /** Idle connections closed to give their slot to another database's waiting call. */
  stolen: number;
  /** Connections closed for idling too long, and for reaching their maximum lifetime. */
  idleClosed: number;
  expired: number;
  /** Connections destroyed because they were broken, left in a transaction, or failed their reset. */
  discarded: number;
}

/** Counters of a new pool: all zero. */
export function newPoolCounters(): PoolCounters {
  return { hits: 0, misses: 0, timeouts: 0, rejected: 0, opened: 0, closed: 0, stolen: 0, idleClosed: 0, expired: 0, discarded: 0 };
}

/** Counters and gauges of one database's pool. */
export interface PoolStats extends PoolCounters {
  database: string;
  /** Connections: connecting + idle + busy. */
  size: number;
  connecting: number;
  idle: number;
  busy: number;
  waiting: number;
  /** Epoch milliseconds of the last call. */
  lastUsedAt: number;
}

/** Totals over every pool. */
export interface ManagerStats {
  totalConnections: number;
  maxTotalConnections: number;
  pools: number;
  /** Pools holding at least one connection. */
  activePools: number;
  waiting: number;
  /** Pools closed for being unused or for exceeding the pool limit. */
  evictions: number;
  poolsCreated: number;
  /** Over the gateway's life, including pools since closed. */
  hits: number;
  misses: number;
  connectionsOpened: number;
  /** Calls that gave up waiting (POOL_EXHAUSTED), and calls refused for too many waiters (TOO_MANY_WAITERS). */
  timeouts: number;
  rejected: number;
}
