// Every database's pool and its connections, counted against the global cap: opening and closing them, retiring pools, and the statistics.
import { DatabaseError } from "pg";
import { GatewayError } from "../errors.js";
import { closeClient, DatabasePool, newClient, TOO_MANY_CONNECTIONS, type Connection } from "./database-pool.js";
import type { ConnectionGroup, PoolManagerOptions } from "./pool-options.js";
import { newPoolCounters, type ManagerStats, type PoolCounters, type PoolStats } from "./pool-stats.js";

/** Why a connection is closed, as its pool counts it ("closed" only as closed: its pool or the gateway is closing). */
export type CloseReason = "closed" | "stolen" | "idleClosed" | "expired" | "discarded";

/**
 * The pools the scheduler (scheduler.ts) hands out connections from: which
 * exist, how many connections they hold in all, and what opening or closing
 * one does to them. `pulse` (the scheduler's) is called after every change the scheduler did
 * not make itself (a connection opened, failed to open, or gone).
 */
export class Pools {
  // Read by the scheduler, changed here only.
  /** Every database's pool, least recently used first. */
  readonly byDatabase = new Map<string, DatabasePool>();
  /** Connections of every pool: connecting, idle and busy. */
  total = 0;
  /**
   * Connections closed and not yet gone: their backends still count in
   * PostgreSQL's connections until they have exited, so they count against
   * the cap too (a new connection waits for the one closed to make room).
   */
  closing = 0;
  /** Pools holding or opening a connection, whether still in `byDatabase` or not (at least the number in it). */
  withConnections = 0;
  /** Set by `closeAll`: no connection is kept from then on. */
  closed = false;
  /** The groups of pools under a limit of their own (see `PoolManagerOptions.shareOf`), by name. */
  readonly #groups = new Map<string, ConnectionGroup>();
  /** Each cluster's connections, by name (see `PoolManagerOptions.clusterOf`). */
  readonly clusters = new Map<string, ConnectionGroup>();
  /** Every pool's counts added up, pools since retired included: counted as they happen, so no total ever goes down. */
  readonly #totals = newPoolCounters();
  #evictions = 0;
  #poolsCreated = 0;

  constructor(
    private readonly options: PoolManagerOptions,
    private readonly pulse: () => void,
  ) {}

  /** Counts one event of a pool, in the pool's counters and in the totals. */
  count(pool: DatabasePool, what: keyof PoolCounters): void {
    pool.counters[what]++;
    this.#totals[what]++;
  }

  /** The database's pool, made if it has none, and now the most recently used. */
  touch(database: string): DatabasePool {
    let pool = this.byDatabase.get(database);
    if (pool === undefined) {
      pool = new DatabasePool(database, this.options.maxConnectionsPerPool, undefined, this.#clusterOf(database));
      this.#share(pool);
      this.#poolsCreated++;
    } else {
      this.byDatabase.delete(database); // re-inserted last: most recently used
    }
    this.byDatabase.set(database, pool);
    return pool;
  }

  /**
   * Reads every pool's share of the cap again (quotas changed). A pool, or a
   * group, above its new share closes idle connections now, and busy ones as
   * they come back.
   */
  reshare(): void {
    for (const group of this.#groups.values()) group.maxConnections = Infinity;
    for (const pool of this.byDatabase.values()) this.#share(pool);
    for (const pool of this.byDatabase.values()) {
      while (pool.idle.length > 0 && this.overShare(pool)) void this.destroy(pool.idle[0]!, "closed");
    }
    this.pulse();
  }

  /**
   * Whether a pool, or its group, holds more connections than its share of
   * the cap: connections closing (no longer held) do not count here.
   */
  overShare(pool: DatabasePool): boolean {
    const group = pool.group;
    return pool.size > pool.maxSize || (group !== undefined && group.size > group.maxConnections);
  }

  /** Opens one more connection for the pool; once open, it is idle there. */
  open(pool: DatabasePool): void {
    if (pool.size === 0) this.withConnections++;
    pool.connecting++;
    this.total++;
    if (pool.group) pool.group.size++;
    if (pool.cluster) pool.cluster.size++;
    const client = newClient(this.options.connectionFor(pool.database));
    client.connect().then(
      () => {
        // Over its share when it was asked for, or cut since (quotas): not kept.
        const over = this.overShare(pool);
        pool.connecting--;
        this.count(pool, "opened");
        pool.refused = undefined;
        const now = Date.now();
        const connection: Connection = { client, pool, createdAt: now, idleSince: now };
        client.on("error", (err) => {
          // An idle connection's backend died (restart, pg_terminate_backend): forget it.
          if (pool.idle.includes(connection)) {
            this.options.onError?.(pool.database, err);
            void this.destroy(connection, "discarded", true);
          }
        });
        if (pool.retired || this.closed || over) {
          this.count(pool, "closed");
          this.total--;
          if (pool.group) pool.group.size--;
          if (pool.cluster) pool.cluster.size--;
          this.#shrunk(pool);
          void this.#close(connection, false);
          return;
        }
        pool.idle.push(connection);
        this.pulse();
      },
      (err: unknown) => {
        pool.connecting--;
        this.total--;
        if (pool.group) pool.group.size--;
        if (pool.cluster) pool.cluster.size--;
        this.#shrunk(pool);
        const database = pool.database;
        if (err instanceof DatabaseError && err.code === "3D000") {
          const gone = new GatewayError("DATABASE_NOT_FOUND", `database "${database}" does not exist`, { metadata: { database }, cause: err });
          if (!pool.retired) this.#retire(pool);
          for (const waiter of pool.waiters.splice(0)) waiter.reject(gone);
        } else if (err instanceof DatabaseError && err.code === TOO_MANY_CONNECTIONS) {
          // A role's connection limit or the server's, reached (other gateways, an operator's sessions):
          // no caller fails for it. They wait, within their deadlines, for the pool's own connections or
          // for a later try; one that waits in vain gets POOL_EXHAUSTED saying why.
          if (pool.refuse(err, performance.now())) this.options.onError?.(database, err);
        } else {
          // Only the oldest caller fails, so that a brief failure does not fail a whole queue.
          pool.waiters
            .shift()
            ?.reject(new GatewayError("DATABASE_UNAVAILABLE", `database "${database}" is unavailable`, { metadata: { database }, cause: err }));
        }
        this.pulse();
      },
    );
  }

  /** Removes a connection from its pool and closes it; `force` drops the socket instead of saying goodbye. */
  destroy(connection: Connection, why: CloseReason, force = false): Promise<void> {
    const pool = connection.pool;
    const at = pool.idle.indexOf(connection);
    if (at >= 0) pool.idle.splice(at, 1);
    else if (!pool.busy.delete(connection)) return Promise.resolve();
    this.count(pool, "closed");
    if (why !== "closed") this.count(pool, why);
    this.total--;
    if (pool.group) pool.group.size--;
    if (pool.cluster) pool.cluster.size--;
    this.#shrunk(pool);
    const ending = this.#close(connection, force);
    this.pulse();
    return ending;
  }

  /** Closes a database's pool: waiting calls fail with `error` (default DATABASE_NOT_FOUND), connections close once released. */
  close(database: string, error?: GatewayError): void {
    const pool = this.byDatabase.get(database);
    if (pool === undefined) return;
    this.#retire(pool);
    this.#evictions++;
    for (const waiter of pool.waiters.splice(0)) {
      waiter.reject(error ?? new GatewayError("DATABASE_NOT_FOUND", `database "${database}" was dropped`, { metadata: { database } }));
    }
    for (const connection of [...pool.idle]) void this.destroy(connection, "closed");
    // Busy connections are destroyed when released: their pool is retired.
    this.pulse();
  }

  /** Closes an unused pool (see `Scheduler`) with its idle connections. */
  evict(pool: DatabasePool): void {
    if (pool.retired) return;
    this.#retire(pool);
    this.#evictions++;
    for (const connection of [...pool.idle]) void this.destroy(connection, "closed");
  }

  /** Closes every pool: waiting calls fail, connections are closed, busy ones dropped. */
  closeAll(): Promise<void> {
    this.closed = true;
    const ending: Promise<void>[] = [];
    for (const pool of this.byDatabase.values()) {
      for (const waiter of pool.waiters.splice(0)) waiter.reject(new GatewayError("DATABASE_UNAVAILABLE", "the gateway is shutting down"));
      // A busy connection is dropped, not ended: pg's end waits for its queries, which a stuck backend may never answer.
      for (const connection of [...pool.idle]) ending.push(this.destroy(connection, "closed"));
      for (const connection of [...pool.busy]) ending.push(this.destroy(connection, "closed", true));
      this.#retire(pool);
    }
    return Promise.all(ending).then(() => undefined);
  }

  /** Per-pool statistics, most recently used first. */
  poolStats(): PoolStats[] {
    return [...this.byDatabase.values()].reverse().map((p) => p.stats());
  }

  /** Totals over every pool, those since closed included. */
  stats(): ManagerStats {
    let waiting = 0;
    let activePools = 0;
    for (const p of this.byDatabase.values()) {
      waiting += p.waiters.length;
      if (p.size > 0) activePools++;
    }
    const counted = this.#totals;
    return {
      totalConnections: this.total,
      maxTotalConnections: this.options.maxTotalConnections,
      pools: this.byDatabase.size,
      activePools,
      waiting,
      evictions: this.#evictions,
      poolsCreated: this.#poolsCreated,
      hits: counted.hits,
      misses: counted.misses,
      connectionsOpened: counted.opened,
      timeouts: counted.timeouts,
      rejected: counted.rejected,
    };
  }

  /** Takes a pool out of `byDatabase` (where a newer pool of its database may be by now): its connections are closed as they come back. */
  #retire(pool: DatabasePool): void {
    if (this.byDatabase.get(pool.database) === pool) this.byDatabase.delete(pool.database);
    pool.retired = true;
  }

  /** After a pool lost a connection (or one being opened): if that was its last, it no longer counts in `withConnections`. */
  #shrunk(pool: DatabasePool): void {
    if (pool.size === 0) this.withConnections--;
  }

  /**
   * Closes a connection no longer counted in its pool; it counts against the
   * cap (`closing`) until its socket has closed, by when its backend is gone.
   */
  #close(connection: Connection, force: boolean): Promise<void> {
    const { group, cluster } = connection.pool;
    this.closing++;
    if (group) group.closing++;
    if (cluster) cluster.closing++;
    return closeClient(connection.client, force).then(() => {
      this.closing--;
      if (group) group.closing--;
      if (cluster) cluster.closing--;
      this.pulse();
    });
  }

  /** The group of a new pool's cluster, made on first use; none for a cluster without a limit. */
  #clusterOf(database: string): ConnectionGroup | undefined {
    const cluster = this.options.clusterOf?.(database);
    if (cluster === undefined || !Number.isFinite(cluster.maxConnections)) return undefined;
    let group = this.clusters.get(cluster.name);
    if (group === undefined) this.clusters.set(cluster.name, (group = { name: cluster.name, maxConnections: cluster.maxConnections, size: 0, closing: 0 }));
    return group;
  }

  /**
   * Reads the pool's share of the cap. A pool moved to another group (or out
   * of one) takes its connections' count along, so that every group's size
   * stays the sum of its pools'. Groups are kept once made: there is one per
   * platform, a bounded number.
   */
  #share(pool: DatabasePool): void {
    const share = this.options.shareOf?.(pool.database);
    pool.maxSize = Math.max(1, Math.min(this.options.maxConnectionsPerPool, share?.maxConnections ?? Infinity));
    let group: ConnectionGroup | undefined;
    if (share?.group !== undefined) {
      group = this.#groups.get(share.group.name);
      if (group === undefined) {
        group = { name: share.group.name, maxConnections: share.group.maxConnections, size: 0, closing: 0 };
        this.#groups.set(group.name, group);
      }
      group.maxConnections = Math.min(group.maxConnections, share.group.maxConnections);
    }
    if (group !== pool.group) {
      if (pool.group) pool.group.size -= pool.size;
      if (group) group.size += pool.size;
      pool.group = group;
    }
  }
}
