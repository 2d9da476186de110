// The pools' scheduler: who gets a connection under one global cap, fairly between databases, and which pools and connections are closed.
import { GatewayError } from "../errors.js";
import type { Connection, DatabasePool, Waiter } from "./database-pool.js";
import type { CallLimits, PoolManagerOptions } from "./pool-options.js";
import { Pools } from "./pools.js";

/**
 * At the cap, how long another database's connection must have been idle
 * before a database that already has connections may close it to open one
 * more of its own (a database with none may close any idle one). Measured
 * with `npm run bench` (500 tenants): without it, a busy gateway at the cap
 * kept closing connections used moments before and opening others.
 */
const STEAL_AFTER_IDLE_MILLIS = 1_000;

/**
 * At the cap, how long a database's oldest caller must have waited for one of
 * its own (busy) connections before the database may close another's to open
 * one more. Measured with `npm run bench` (500 tenants over QueryStream, two
 * queries to one database often in flight at once): without it, the gateway
 * opened 20 connections a second at the cap, each costing a backend start,
 * to save a wait of a few milliseconds.
 */
const STEAL_AFTER_WAIT_MILLIS = 50;

/**
 * Per-database pools under one global cap. pg-pool cannot share a cap between
 * pools or take an idle connection from one database to serve another, so
 * this is a small scheduler in pg-pool's own style: all state changes end in
 * `#pulse()`, which hands idle connections to their own database's waiting
 * calls, then opens one for each database with waiting calls and no
 * connection at all (closing the longest-idle connection of a database nobody
 * waits for if the cap is reached), then more while capacity lasts. At the
 * cap, a connection freed by a busy database goes to a database with no
 * connection before its own next caller, so one busy tenant cannot starve the
 * rest. Pools unused for long, or least recently used beyond `maxPools`, are
 * closed. What opening and closing connections does is in `Pools`.
 */
export class Scheduler {
  /** The pools it hands out connections from; the pool manager reads and closes them there. */
  readonly pools: Pools;
  /**
   * Pools that have had callers waiting since the scheduler last looked (it
   * forgets those with none left), so that it looks only at these: every
   * call's release runs the scheduler, and with many tenants most pools have
   * nobody waiting.
   */
  readonly #waiting = new Set<DatabasePool>();
  #seq = 0;
  /** Set by `stop`: what every call asking for a connection from then on fails with. */
  #stopped: GatewayError | undefined;
  #pulsing = false;
  #pulseAgain = false;
  /** A later run of the scheduler (`#pulseIn`). */
  #later: { due: number; timer: NodeJS.Timeout } | undefined;
  readonly #reaper: NodeJS.Timeout;

  constructor(private readonly options: PoolManagerOptions) {
    this.pools = new Pools(options, () => this.#pulse());
    this.#reaper = setInterval(() => this.#reap(), options.reapIntervalMillis);
    this.#reaper.unref();
  }

  /** What every call asking for a connection fails with once `stop` was called. */
  get stopped(): GatewayError | undefined {
    return this.#stopped;
  }

  /** A connection of the database, marked busy: an idle one at once, or else the call waits its turn, within its deadline. */
  async acquire(database: string, limits: CallLimits): Promise<Connection> {
    if (this.pools.closed) throw new GatewayError("DATABASE_UNAVAILABLE", "the gateway is shutting down");
    if (this.#stopped !== undefined) throw this.#stopped;
    const pool = this.pools.touch(database);
    pool.lastUsedAt = Date.now();
    if (pool.waiters.length === 0 && pool.idle.length > 0) {
      this.pools.count(pool, "hits");
      this.options.onAcquired?.(0, database);
      return this.#checkOut(pool.idle.pop()!);
    }
    if (pool.waiters.length >= this.options.maxWaitersPerPool) {
      this.pools.count(pool, "rejected");
      throw new GatewayError("TOO_MANY_WAITERS", `too many calls are waiting for a connection to "${database}"`, { metadata: { database } });
    }
    this.pools.count(pool, "misses");
    const waitStarted = Date.now();
    const wait = Math.min(this.options.acquireTimeoutMillis, limits.deadline - waitStarted);
    if (!(wait > 0)) throw pool.exhausted(performance.now());
    const connection = await new Promise<Connection>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        limits.signal?.removeEventListener("abort", onAbort);
      };
      const leave = () => {
        const at = pool.waiters.indexOf(waiter);
        if (at >= 0) pool.waiters.splice(at, 1);
        done();
      };
      const onAbort = () => {
        leave();
        reject(new GatewayError("CANCELLED", "the call was cancelled while waiting for a connection"));
      };
      const waiter: Waiter = {
        seq: ++this.#seq,
        since: performance.now(),
        resolve: (c) => (done(), resolve(c)),
        reject: (e) => (done(), reject(e)),
      };
      const timer = setTimeout(() => {
        leave();
        this.pools.count(pool, "timeouts");
        reject(pool.exhausted(waiter.since));
        this.#pulse();
      }, wait);
      limits.signal?.addEventListener("abort", onAbort, { once: true });
      pool.waiters.push(waiter);
      this.#waiting.add(pool);
      this.#pulse();
    });
    this.options.onAcquired?.(Date.now() - waitStarted, database);
    return this.#checkOut(connection);
  }

  /** Marks a connection busy; one past its lifetime is replaced, one that sat idle long is checked first. */
  async #checkOut(connection: Connection): Promise<Connection> {
    const pool = connection.pool;
    pool.busy.add(connection);
    if (Date.now() - connection.createdAt > this.options.maxLifetimeMillis) {
      void this.pools.destroy(connection, "expired");
      return this.acquire(pool.database, { deadline: Date.now() + this.options.acquireTimeoutMillis });
    }
    if (Date.now() - connection.idleSince > this.options.validateAfterIdleMillis) {
      try {
        await connection.client.query("SELECT 1");
      } catch {
        void this.pools.destroy(connection, "discarded", true);
        return this.acquire(pool.database, { deadline: Date.now() + this.options.acquireTimeoutMillis });
      }
    }
    return connection;
  }

  /** Whether a busy connection may go back to its pool: the pool is still the manager's, and the manager open. */
  takesBack(connection: Connection): boolean {
    return !connection.pool.retired && !this.pools.closed;
  }

  /** A busy connection, reset and outside any transaction, goes back to its pool's idle ones. */
  putBack(connection: Connection): void {
    const pool = connection.pool;
    if (!this.takesBack(connection)) {
      void this.pools.destroy(connection, "closed");
      return;
    }
    if (this.pools.overShare(pool)) {
      // Its share of the cap was cut (quotas): it shrinks as its connections come back.
      void this.pools.destroy(connection, "closed");
      return;
    }
    pool.busy.delete(connection);
    connection.idleSince = Date.now();
    pool.idle.push(connection);
    const starving = this.#starving(pool);
    if (starving !== undefined) {
      // At the cap, a database without any connection gets this slot before our own next caller.
      starving.freeing++;
      void this.pools.destroy(connection, "stolen").finally(() => starving.freeing--);
      return;
    }
    this.#pulse();
  }

  /** From now on, every call waiting for a connection or asking for one fails with `err`. */
  stop(err: GatewayError): void {
    this.#stopped = err;
    for (const pool of this.pools.byDatabase.values()) for (const waiter of pool.waiters.splice(0)) waiter.reject(err);
  }

  /** Closes every pool and stops the reaper. */
  closeAll(): Promise<void> {
    if (this.#later !== undefined) clearTimeout(this.#later.timer);
    clearInterval(this.#reaper);
    return this.pools.closeAll();
  }

  /** See `PoolManager.available`. */
  available(database: string): number {
    const pool = this.pools.byDatabase.get(database);
    const size = pool?.size ?? 0;
    const idle = Math.max(0, (pool?.idle.length ?? 0) - (pool?.waiters.length ?? 0));
    const room = Math.max(0, Math.min((pool?.maxSize ?? this.options.maxConnectionsPerPool) - size, pool ? this.#room(pool) : this.#roomUnderCap()));
    return idle + room;
  }

  /**
   * The scheduler: run after every change of state. Changes made while it runs
   * (a connection closed to make room) only ask for another round, so that
   * no nested round can spend a slot this one has counted on.
   */
  #pulse(): void {
    if (this.pools.closed) return;
    if (this.#pulsing) {
      this.#pulseAgain = true;
      return;
    }
    this.#pulsing = true;
    try {
      do {
        this.#pulseAgain = false;
        this.#pulseOnce();
      } while (this.#pulseAgain && !this.pools.closed);
    } finally {
      this.#pulsing = false;
    }
  }

  #pulseOnce(): void {
    const waiting: DatabasePool[] = [];
    for (const pool of this.#waiting) {
      if (pool.waiters.length > 0) waiting.push(pool);
      else this.#waiting.delete(pool);
    }
    waiting.sort((a, b) => a.waiters[0]!.seq - b.waiters[0]!.seq);
    // 1. Idle connections serve their own database's callers, oldest caller first.
    for (const pool of waiting) {
      while (pool.waiters.length > 0 && pool.idle.length > 0) {
        const connection = pool.idle.pop()!;
        pool.busy.add(connection); // counted as busy from here; #checkOut finds it there
        pool.waiters.shift()!.resolve(connection);
      }
    }
    // 2. A database with callers and no connection gets one first, even at the cap.
    const now = performance.now();
    for (const pool of waiting) {
      if (pool.waiters.length > 0 && pool.serving === 0 && pool.size < pool.maxSize && !this.#refused(pool, now) && this.#makeRoom(pool)) {
        this.pools.open(pool);
      }
    }
    // 3. New connections for the callers still waiting, while capacity lasts. At the cap, a database
    //    that has connections takes the place of another's only if that one has been idle for a
    //    while: otherwise its callers wait for their own connections, which costs less than closing
    //    a connection that is in use every few milliseconds and opening one (a backend start).
    //    And only once its oldest caller has waited a while: a busy connection of its own is usually
    //    free again sooner than a new one could be opened.
    const stealAfterWait = this.options.stealAfterWaitMillis ?? STEAL_AFTER_WAIT_MILLIS;
    for (const pool of waiting) {
      // Refused by PostgreSQL: the callers wait for the pool's own connections, or for the next try.
      if (this.#refused(pool, now)) continue;
      let needed = pool.waiters.length - pool.connecting;
      while (needed > 0 && pool.size < pool.maxSize && this.#room(pool) > 0) {
        this.pools.open(pool);
        needed--;
      }
      if (needed <= 0 || pool.size >= pool.maxSize) continue;
      const waited = now - pool.waiters[0]!.since;
      if (waited < stealAfterWait) {
        this.#pulseIn(stealAfterWait - waited);
        continue;
      }
      while (needed > 0 && pool.size < pool.maxSize && this.#makeRoom(pool, STEAL_AFTER_IDLE_MILLIS)) {
        this.pools.open(pool);
        needed--;
      }
    }
    this.#enforcePoolLimit();
  }

  /** Runs the scheduler again in `millis` (or sooner, if already due sooner). */
  #pulseIn(millis: number): void {
    const due = performance.now() + millis;
    if (this.#later !== undefined && this.#later.due <= due) return;
    if (this.#later !== undefined) clearTimeout(this.#later.timer);
    const timer = setTimeout(() => {
      this.#later = undefined;
      if (!this.pools.closed) this.#pulse();
    }, millis);
    timer.unref();
    this.#later = { due, timer };
  }

  /** Whether PostgreSQL refused this database a connection recently (53300): then none is tried until its backoff ends, when the scheduler runs again. */
  #refused(pool: DatabasePool, now: number): boolean {
    if (!pool.inBackoff(now)) return false;
    this.#pulseIn(pool.refused!.until - now);
    return true;
  }

  /** Connections that can still be opened under the global cap (closing ones count until gone). */
  #roomUnderCap(): number {
    return this.options.maxTotalConnections - this.pools.total - this.pools.closing;
  }

  /** Connections the pool's group (its platform's share of the cap) can still open; negative when its share was cut. */
  #groupRoom(pool: DatabasePool): number {
    const group = pool.group;
    return group === undefined ? Infinity : group.maxConnections - group.size - group.closing;
  }

  /** Connections the pool's cluster can still open, when the cluster has a limit of its own. */
  #clusterRoom(pool: DatabasePool): number {
    const cluster = pool.cluster;
    return cluster === undefined ? Infinity : cluster.maxConnections - cluster.size - cluster.closing;
  }

  /** Connections that can be opened for the pool now: under the global cap, its group's and its cluster's. */
  #room(pool: DatabasePool): number {
    return Math.min(this.#roomUnderCap(), this.#groupRoom(pool), this.#clusterRoom(pool));
  }

  /**
   * A database with callers waiting and no connection at all, that cannot
   * open one for want of room that closing a connection of `from` would
   * make, and for which no other database's connection is closing already:
   * not one that PostgreSQL refused and that waits out its backoff (a slot
   * freed for it would go unused, and the connection closed for it reopened).
   */
  #starving(from: DatabasePool): DatabasePool | undefined {
    const now = performance.now();
    for (const pool of this.#waiting) {
      if (pool.waiters.length === 0 || pool.serving > 0 || pool.size >= pool.maxSize || pool.freeing > 0 || pool.inBackoff(now) || this.#room(pool) > 0)
        continue;
      // Another group's (or cluster's) connection makes room under the global cap only.
      if ((this.#groupRoom(pool) > 0 || pool.group === from.group) && (this.#clusterRoom(pool) > 0 || pool.cluster === from.cluster)) return pool;
    }
    return undefined;
  }

  /**
   * True when one more connection fits under the cap. At the cap, closes the
   * longest-idle connection (idle for at least `minIdleMillis`) of a database
   * that nobody is waiting for, one that database can spare if there is any,
   * and the room is there once its backend has gone (the scheduler runs again
   * then); one such close at a time per pool, so that a pool does not empty
   * others while it waits.
   */
  #makeRoom(forPool: DatabasePool, minIdleMillis = 0): boolean {
    if (this.#room(forPool) > 0) return true;
    if (forPool.freeing > 0) return false;
    // At its group's (or cluster's) limit, only a connection of the group (or cluster) makes room.
    const sameGroup = this.#groupRoom(forPool) <= 0;
    const sameCluster = this.#clusterRoom(forPool) <= 0;
    // A connection a database can spare (it keeps another) before a database's last one.
    let spare: Connection | undefined;
    let last: Connection | undefined;
    const idleSince = Date.now() - minIdleMillis;
    for (const pool of this.pools.byDatabase.values()) {
      if (pool === forPool || pool.waiters.length > 0 || (sameGroup && pool.group !== forPool.group) || (sameCluster && pool.cluster !== forPool.cluster))
        continue;
      const oldest = pool.idle[0];
      if (oldest === undefined || oldest.idleSince > idleSince) continue;
      if (pool.size > 1) {
        if (spare === undefined || oldest.idleSince < spare.idleSince) spare = oldest;
      } else if (last === undefined || oldest.idleSince < last.idleSince) {
        last = oldest;
      }
    }
    const victim = spare ?? last;
    if (victim === undefined) return false;
    forPool.freeing++;
    void this.pools.destroy(victim, "stolen").finally(() => forPool.freeing--);
    return false;
  }

  /** Beyond `maxPools` pools with connections, closes the least recently used pools that no call is using. */
  #enforcePoolLimit(): void {
    if (this.pools.withConnections <= this.options.maxPools) return; // the common case, without looking at every pool
    let withConnections = 0;
    for (const p of this.pools.byDatabase.values()) if (p.size > 0) withConnections++;
    for (const pool of this.pools.byDatabase.values()) {
      if (withConnections <= this.options.maxPools) break;
      if (pool.size > 0 && pool.busy.size === 0 && pool.connecting === 0 && pool.waiters.length === 0) {
        this.pools.evict(pool);
        withConnections--;
      }
    }
  }

  /** Enforces idle timeouts and lifetimes, keeps one warm connection per active pool, forgets unused pools. */
  #reap(): void {
    const now = Date.now();
    for (const pool of [...this.pools.byDatabase.values()]) {
      // Closing a connection below pulses the scheduler, which may evict a pool later in this list.
      if (pool.retired) continue;
      const inUse = pool.busy.size > 0 || pool.connecting > 0 || pool.waiters.length > 0;
      if (!inUse && now - pool.lastUsedAt > this.options.poolIdleTimeoutMillis) {
        this.pools.evict(pool);
        continue;
      }
      for (const connection of [...pool.idle]) {
        if (now - connection.createdAt > this.options.maxLifetimeMillis) {
          void this.pools.destroy(connection, "expired");
        } else if (now - connection.idleSince > this.options.connectionIdleTimeoutMillis && pool.size > 1) {
          void this.pools.destroy(connection, "idleClosed");
        }
      }
      // One warm connection per active pool, if it fits under the cap without taking anyone's.
      if (pool.size === 0 && !this.pools.closed && this.#room(pool) > 0 && !this.#refused(pool, performance.now())) this.pools.open(pool);
    }
    this.#pulse();
  }
}
