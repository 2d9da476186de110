// Per-database connection pools under one global cap: fair leases within deadlines, cancellation, connections reset or destroyed before reuse.
import pg from "pg";
import { DatabaseError } from "pg";
import { beforeStatement, GatewayError, leavesConnectionUsable } from "../errors.js";
import { withSpan } from "../telemetry/tracing.js";
import { sendCancelRequest } from "./cancel-request.js";
import { passDataRowBytes } from "./data-row-parser.js";
import { activeQueryOf, destroyConnection, isQueryable } from "./pg-internals.js";
import { addCounters, newPoolCounters, type ManagerStats, type PoolStats } from "./pool-stats.js";

export type { ManagerStats, PoolStats };

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
   * more for it (default `STEAL_AFTER_WAIT_MILLIS`).
   */
  stealAfterWaitMillis?: number;
  /** How often timeouts and limits are enforced. */
  reapIntervalMillis: number;
  /** After an interruption, how long the backend has to end its statement before its connection is destroyed. */
  cancelGraceMillis: number;
  /** Errors worth an operator's attention (a failing idle connection, a failed reset). */
  onError?(database: string, err: unknown): void;
  /** Told how long each call waited for its connection (0 for a hit), for the wait-time histogram. */
  onAcquired?(waitMillis: number): void;
}

/** What a call brings to the pool: its deadline (epoch ms, Infinity for none) and cancellation. */
export interface CallLimits {
  deadline: number;
  signal?: AbortSignal;
}

/** A connection checked out for one call (see `PoolManager.withConnection`). */
export interface Lease {
  readonly client: pg.Client;
  /** The database the connection is to. */
  readonly database: string;
  /**
   * Aborted (with the call's error as reason) when the call is interrupted:
   * stop using the client. Made when first read; the hot paths use
   * `throwIfInterrupted` and `onInterrupt`, which cost no AbortController.
   */
  readonly signal: AbortSignal;
  /** Throws the interruption's error if the call has been interrupted. */
  throwIfInterrupted(): void;
  /** Calls `listener` once when the call is interrupted (at once if it has been); returns what removes it. */
  onInterrupt(listener: () => void): () => void;
  /** Ends the call with `err`: its running statement is cancelled and its transaction rolled back. */
  interrupt(err: GatewayError): void;
  /**
   * Runs `work` (a COMMIT, a BEGIN with statements pipelined behind it) so
   * that an interruption meanwhile sends PostgreSQL no cancel: what was sent
   * is left to finish. The call then ends with the error `outcome` makes when
   * given (made only then), or else with the interruption's own error.
   */
  uninterruptible<T>(work: () => Promise<T>, outcome?: () => GatewayError): Promise<T>;
  /**
   * Says that the last thing run on the connection was `DISCARD ALL`, outside
   * any transaction: the pool takes it back without resetting it again.
   */
  markReset(): void;
  /**
   * Asks PostgreSQL once more to cancel the statement the connection is
   * running, for an interrupted call that pipelined several: each cancel
   * stops only the statement running when it arrives. Only after `signal`
   * has aborted, so that it can only hit this call's own statements.
   */
  cancelAgain(): Promise<boolean>;
}

interface Connection {
  readonly client: pg.Client;
  readonly pool: DatabasePool;
  readonly createdAt: number;
  idleSince: number;
}

interface Waiter {
  readonly seq: number;
  /** When it began to wait (performance.now(): monotonic). */
  readonly since: number;
  resolve(connection: Connection): void;
  reject(err: GatewayError): void;
}

class DatabasePool {
  readonly idle: Connection[] = []; // most recently used last
  readonly busy = new Set<Connection>();
  connecting = 0;
  /** Connections of other pools being closed to make room for this one (at most one at a time). */
  freeing = 0;
  readonly waiters: Waiter[] = [];
  readonly counters = newPoolCounters();
  lastUsedAt = Date.now();
  /** Taken out of the manager's pools (closed, evicted, its database gone): its connections are closed as they come back. */
  retired = false;
  /** While PostgreSQL refuses this database more connections (53300): no new one is tried before `until` (performance.now()). */
  refused: { at: number; until: number; backoffMillis: number; error: DatabaseError } | undefined;
  constructor(readonly database: string) {}

  get size(): number {
    return this.idle.length + this.busy.size + this.connecting;
  }
}

/** What resets a connection between calls (see `PoolManager`). */
export const RESET_STATEMENT = "DISCARD ALL";

/** A connection whose reset (ROLLBACK, DISCARD ALL) takes longer than this is destroyed. */
const RESET_TIMEOUT_MILLIS = 10_000;

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

/** PostgreSQL's too_many_connections: a role's CONNECTION LIMIT, or the server's max_connections. */
const TOO_MANY_CONNECTIONS = "53300";

/** After PostgreSQL refuses a connection, how long before the next try; doubled on each refusal, up to the most. */
const REFUSED_BACKOFF_MILLIS = 50;
const REFUSED_BACKOFF_MAX_MILLIS = 1_000;

/**
 * The only result parser: every value stays PostgreSQL's text form, which the
 * gateway passes through instead of parsing and re-encoding it.
 */
export const TEXT_PASSTHROUGH = { getTypeParser: () => (value: string) => value };

/**
 * Per-database connection pools under one global cap. pg-pool cannot share a
 * cap between pools or take an idle connection from one database to serve
 * another, so this is a small scheduler in pg-pool's own style: all state
 * changes end in `pulse()`, which hands idle connections to their own
 * database's waiting calls, then opens one for each database with waiting
 * calls and no connection at all (closing the longest-idle connection of a
 * database nobody waits for if the cap is reached), then more while capacity
 * lasts. At the cap, a connection freed by a busy database goes to a database
 * with no connection before its own next caller, so one busy tenant cannot
 * starve the rest.
 *
 * A connection goes back to its pool only if it is outside any transaction and
 * `DISCARD ALL` succeeded on it, so no session state (SET, PREPARE, temporary
 * tables, LISTEN, advisory locks) reaches the next call; anything in doubt is
 * destroyed.
 */
export class PoolManager {
  readonly #pools = new Map<string, DatabasePool>(); // least recently used first
  /**
   * Pools that have had callers waiting since the scheduler last looked (it
   * forgets those with none left), so that it looks only at these: every
   * call's release runs the scheduler, and with many tenants most pools have
   * nobody waiting.
   */
  readonly #waiting = new Set<DatabasePool>();
  /** Pools holding or opening a connection, whether still in `#pools` or not (at least the number in it). */
  #withConnections = 0;
  #total = 0;
  /**
   * Connections closed and not yet gone: their backends still count in
   * PostgreSQL's connections until they have exited, so they count against
   * the cap too (a new connection waits for the one closed to make room).
   */
  #closing = 0;
  #seq = 0;
  #closed = false;
  /** Set by `stop`: what every call asking for a connection from then on fails with. */
  #stopped: GatewayError | undefined;
  /** The interruption of each call holding a connection (see `withConnection`), for `stop`. */
  readonly #leases = new Set<(err: GatewayError) => void>();
  /** Pools retired with connections not yet all gone (see `#retire`), whose counters still count in the totals. */
  readonly #retiring = new Set<DatabasePool>();
  /** The counters of the pools retired and gone, which still count in the totals. */
  readonly #gone = newPoolCounters();
  #evictions = 0;
  #poolsCreated = 0;
  #pulsing = false;
  #pulseAgain = false;
  /** A later run of the scheduler (`#pulseIn`). */
  #later: { due: number; timer: NodeJS.Timeout } | undefined;
  readonly #reaper: NodeJS.Timeout;

  constructor(private readonly options: PoolManagerOptions) {
    this.#reaper = setInterval(() => this.#reap(), options.reapIntervalMillis);
    this.#reaper.unref();
  }

  /**
   * Runs `fn` on a connection of the database and gives the connection back
   * after: reset with `DISCARD ALL`, after a `ROLLBACK` if `fn` left a
   * transaction open, or destroyed if anything is in doubt.
   *
   * The call is interrupted when its deadline passes, its signal aborts, or
   * `fn` calls `lease.interrupt`: the call fails at once (DEADLINE_EXCEEDED,
   * CANCELLED, or the given error), `lease.signal` aborts so that `fn` stops,
   * and PostgreSQL is asked to cancel the backend's statement. The connection
   * is reused only once `fn` has settled and the cancel request has been
   * delivered, so a late cancel can never hit a later statement; a backend
   * that does not answer within the grace period (a stopped process, a lost
   * network) has its connection destroyed instead.
   */
  async withConnection<T>(database: string, fn: (lease: Lease) => Promise<T>, limits: CallLimits): Promise<T> {
    let connection: Connection;
    try {
      connection = await withSpan("pool.acquire", { "db.namespace": database }, () => this.#acquire(database, limits));
    } catch (err) {
      throw beforeStatement(err);
    }
    if (this.#stopped !== undefined) {
      // Stopped while the connection was being checked: the call has not begun.
      this.#release(connection, undefined);
      throw beforeStatement(this.#stopped);
    }
    // The interruption's error once interrupted; its AbortSignal is made only for a lease user that asks for it.
    let reason: GatewayError | undefined;
    let abort: AbortController | undefined;
    let listeners: (() => void)[] | undefined;
    let shielded = false;
    let shield: (() => GatewayError) | undefined;
    let cancelOnRecovery = true;
    let interrupt!: (err: GatewayError) => void;
    const interrupted = new Promise<never>((_, reject) => {
      interrupt = (err) => {
        if (reason !== undefined) return;
        cancelOnRecovery = !shielded;
        reason = shield?.() ?? err;
        // The call fails first (its handlers run later, as microtasks), whatever a listener does.
        reject(reason);
        abort?.abort(reason);
        if (listeners !== undefined) for (const listener of listeners.splice(0)) listener();
      };
    });
    const uninterruptible = async <R>(work: () => Promise<R>, outcome?: () => GatewayError): Promise<R> => {
      shielded = true;
      shield = outcome;
      try {
        return await work();
      } finally {
        shielded = false;
        shield = undefined;
      }
    };
    interrupted.catch(() => undefined);
    this.#leases.add(interrupt);
    const remaining = limits.deadline - Date.now();
    const timer = Number.isFinite(remaining)
      ? setTimeout(() => interrupt(new GatewayError("DEADLINE_EXCEEDED", "the call's deadline passed while the statement ran")), Math.max(0, remaining))
      : undefined;
    const onAbort = () => interrupt(new GatewayError("CANCELLED", "the call was cancelled"));
    if (limits.signal?.aborted) onAbort();
    else limits.signal?.addEventListener("abort", onAbort, { once: true });
    let reset = false;
    const lease: Lease = {
      client: connection.client,
      database,
      get signal() {
        if (abort === undefined) {
          abort = new AbortController();
          if (reason !== undefined) abort.abort(reason);
        }
        return abort.signal;
      },
      throwIfInterrupted() {
        if (reason !== undefined) throw reason;
      },
      onInterrupt(listener) {
        if (reason !== undefined) {
          listener();
          return noop;
        }
        (listeners ??= []).push(listener);
        return () => {
          const at = listeners!.indexOf(listener);
          if (at >= 0) listeners!.splice(at, 1);
        };
      },
      interrupt,
      uninterruptible,
      markReset() {
        reset = true;
      },
      cancelAgain: () => (reason !== undefined && cancelOnRecovery ? this.#cancel(connection) : Promise.resolve(false)),
    };
    const work = (async () => fn(lease))();
    try {
      const result = await Promise.race([work, interrupted]);
      this.#release(connection, undefined, reset);
      return result;
    } catch (err) {
      if (reason !== undefined) void this.#recover(connection, work, cancelOnRecovery);
      else this.#release(connection, err);
      throw err;
    } finally {
      this.#leases.delete(interrupt);
      clearTimeout(timer);
      limits.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * After an interruption: cancels the backend's statement (unless it is an
   * uninterruptible COMMIT), waits (within the grace period) for the call's
   * work to end and the cancel to be delivered, then releases the connection
   * as usual; destroys it if either is late.
   */
  async #recover(connection: Connection, work: Promise<unknown>, cancel: boolean): Promise<void> {
    const grace = this.options.cancelGraceMillis;
    const cancelled = cancel ? this.#cancel(connection) : Promise.resolve(true);
    const outcome = work.then(
      () => ({ err: undefined as unknown }),
      (err: unknown) => ({ err }),
    );
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), grace)));
    const ended = await Promise.race([Promise.all([outcome, cancelled]), late]);
    clearTimeout(timer);
    if (ended === "late" || !ended[1]) {
      this.#destroy(connection, "discarded", true);
      return;
    }
    this.#release(connection, ended[0].err);
  }

  /** Asks PostgreSQL to cancel the connection's running statement; true once delivered within the grace period. */
  #cancel(connection: Connection): Promise<boolean> {
    return sendCancelRequest(this.options.connectionFor(connection.pool.database), connection.client, this.options.cancelGraceMillis);
  }

  /** Closes a database's pool: waiting calls fail with DATABASE_NOT_FOUND, connections close once released. */
  close(database: string): void {
    const pool = this.#pools.get(database);
    if (pool === undefined) return;
    this.#retire(pool);
    this.#evictions++;
    for (const waiter of pool.waiters.splice(0)) {
      waiter.reject(new GatewayError("DATABASE_NOT_FOUND", `database "${database}" was dropped`, { metadata: { database } }));
    }
    for (const connection of [...pool.idle]) this.#destroy(connection, "closed");
    // Busy connections are destroyed when released: their pool is no longer in the map.
    this.#pulse();
  }

  /**
   * Stops serving calls, for a shutdown whose grace period is over: every
   * call holding a connection is interrupted as by `Lease.interrupt` (its
   * statement cancelled, its transaction rolled back) with SHUTTING_DOWN and
   * `statement_sent: "true"` (a COMMIT on its way ends as its shield says),
   * and every call waiting for a connection, or asking for one later, fails
   * with SHUTTING_DOWN, not sent. Connections are closed by `closeAll`.
   */
  stop(): void {
    this.#stopped = new GatewayError("SHUTTING_DOWN", "the gateway shut down before the call had a connection: it was not run");
    for (const pool of this.#pools.values()) for (const waiter of pool.waiters.splice(0)) waiter.reject(this.#stopped);
    const running = new GatewayError("SHUTTING_DOWN", "the gateway shut down while the statement ran: it may have run", {
      metadata: { statement_sent: "true" },
    });
    for (const interrupt of [...this.#leases]) interrupt(running);
  }

  /** Closes every pool and stops the reaper. */
  async closeAll(): Promise<void> {
    this.#closed = true;
    if (this.#later !== undefined) clearTimeout(this.#later.timer);
    clearInterval(this.#reaper);
    const ending: Promise<void>[] = [];
    for (const pool of this.#pools.values()) {
      for (const waiter of pool.waiters.splice(0)) waiter.reject(new GatewayError("DATABASE_UNAVAILABLE", "the gateway is shutting down"));
      // A busy connection is dropped, not ended: pg's end waits for its queries, which a stuck backend may never answer.
      for (const connection of [...pool.idle]) ending.push(this.#destroy(connection, "closed"));
      for (const connection of [...pool.busy]) ending.push(this.#destroy(connection, "closed", true));
      this.#retire(pool);
    }
    await Promise.all(ending);
  }

  /**
   * The identity of the database's pool for as long as the pool lives,
   * undefined when it has none: a key (in a WeakMap) for what a caller learns
   * of a database and forgets with its pool, as QueryMany its time per
   * statement.
   */
  poolKey(database: string): object | undefined {
    return this.#pools.get(database);
  }

  /**
   * Connections a call to the database could have now without waiting: idle
   * ones no one waits for, and new ones that fit under the pool's and the
   * global cap.
   */
  available(database: string): number {
    const pool = this.#pools.get(database);
    const size = pool?.size ?? 0;
    const idle = Math.max(0, (pool?.idle.length ?? 0) - (pool?.waiters.length ?? 0));
    const room = Math.max(0, Math.min(this.options.maxConnectionsPerPool - size, this.#roomUnderCap()));
    return idle + room;
  }

  /** Per-pool statistics, most recently used first. */
  poolStats(): PoolStats[] {
    return [...this.#pools.values()].reverse().map((p) => ({
      database: p.database,
      size: p.size,
      connecting: p.connecting,
      idle: p.idle.length,
      busy: p.busy.size,
      waiting: p.waiters.length,
      lastUsedAt: p.lastUsedAt,
      ...p.counters,
    }));
  }

  /** Totals over every pool. */
  stats(): ManagerStats {
    let waiting = 0;
    let activePools = 0;
    const counted = { ...this.#gone };
    for (const p of this.#pools.values()) {
      waiting += p.waiters.length;
      if (p.size > 0) activePools++;
      addCounters(counted, p.counters);
    }
    for (const p of this.#retiring) addCounters(counted, p.counters);
    return {
      totalConnections: this.#total,
      maxTotalConnections: this.options.maxTotalConnections,
      pools: this.#pools.size,
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

  async #acquire(database: string, limits: CallLimits): Promise<Connection> {
    if (this.#closed) throw new GatewayError("DATABASE_UNAVAILABLE", "the gateway is shutting down");
    if (this.#stopped !== undefined) throw this.#stopped;
    const pool = this.#pool(database);
    pool.lastUsedAt = Date.now();
    if (pool.waiters.length === 0 && pool.idle.length > 0) {
      pool.counters.hits++;
      this.options.onAcquired?.(0);
      return this.#checkOut(pool.idle.pop()!);
    }
    if (pool.waiters.length >= this.options.maxWaitersPerPool) {
      pool.counters.rejected++;
      throw new GatewayError("TOO_MANY_WAITERS", `too many calls are waiting for a connection to "${database}"`, { metadata: { database } });
    }
    pool.counters.misses++;
    const waitStarted = Date.now();
    const wait = Math.min(this.options.acquireTimeoutMillis, limits.deadline - waitStarted);
    if (!(wait > 0)) throw this.#exhausted(pool, performance.now());
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
        pool.counters.timeouts++;
        reject(this.#exhausted(pool, waiter.since));
        this.#pulse();
      }, wait);
      limits.signal?.addEventListener("abort", onAbort, { once: true });
      pool.waiters.push(waiter);
      this.#waiting.add(pool);
      this.#pulse();
    });
    this.options.onAcquired?.(Date.now() - waitStarted);
    return this.#checkOut(connection);
  }

  /** POOL_EXHAUSTED for a caller that began to wait at `since` (performance.now()); it says so if PostgreSQL refused a connection meanwhile. */
  #exhausted(pool: DatabasePool, since: number): GatewayError {
    if (pool.refused !== undefined && pool.refused.at >= since) {
      return new GatewayError(
        "POOL_EXHAUSTED",
        `no connection to "${pool.database}" became free in time, and PostgreSQL refused more: ${pool.refused.error.message}`,
        {
          metadata: { database: pool.database, sqlstate: TOO_MANY_CONNECTIONS },
        },
      );
    }
    return new GatewayError("POOL_EXHAUSTED", `no connection to "${pool.database}" became free in time`, { metadata: { database: pool.database } });
  }

  /** Whether PostgreSQL refused this database a connection recently (53300): then none is tried until its backoff ends, when the scheduler runs again. */
  #refused(pool: DatabasePool, now: number): boolean {
    if (!inBackoff(pool, now)) return false;
    this.#pulseIn(pool.refused!.until - now);
    return true;
  }

  /** Marks a connection busy; one past its lifetime is replaced, one that sat idle long is checked first. */
  async #checkOut(connection: Connection): Promise<Connection> {
    const pool = connection.pool;
    pool.busy.add(connection);
    if (Date.now() - connection.createdAt > this.options.maxLifetimeMillis) {
      void this.#destroy(connection, "expired");
      return this.#acquire(pool.database, { deadline: Date.now() + this.options.acquireTimeoutMillis });
    }
    if (Date.now() - connection.idleSince > this.options.validateAfterIdleMillis) {
      try {
        await connection.client.query("SELECT 1");
      } catch {
        this.#destroy(connection, "discarded", true);
        return this.#acquire(pool.database, { deadline: Date.now() + this.options.acquireTimeoutMillis });
      }
    }
    return connection;
  }

  #release(connection: Connection, err: unknown, alreadyReset = false): void {
    const pool = connection.pool;
    if (!pool.busy.has(connection)) return; // already destroyed (interrupted)
    if (pool.retired || this.#closed) {
      this.#destroy(connection, "closed");
      return;
    }
    const client = connection.client;
    if ((err !== undefined && !leavesConnectionUsable(err)) || !isQueryable(client) || activeQueryOf(client)) {
      // Broken, or still busy with something its call walked away from (an unclosed cursor).
      this.#destroy(connection, "discarded", true);
      return;
    }
    if (Date.now() - connection.createdAt > this.options.maxLifetimeMillis) {
      this.#destroy(connection, "expired");
      return;
    }
    // DISCARD ALL: CLOSE ALL, RESET ALL (role and settings), DEALLOCATE ALL, UNLISTEN *,
    // pg_advisory_unlock_all(), DISCARD TEMP/PLANS/SEQUENCES. A transaction the call left
    // open (it cannot run inside one) is rolled back first. The caller already has its answer.
    const status = client.getTransactionStatus();
    if (alreadyReset && status === "I") {
      this.#putBack(connection);
      return;
    }
    const reset = status === "I" ? client.query(RESET_STATEMENT) : client.query("ROLLBACK").then(() => client.query(RESET_STATEMENT));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("the connection's reset took too long")), RESET_TIMEOUT_MILLIS)));
    Promise.race([reset, late])
      .finally(() => clearTimeout(timer))
      .then(
        () => {
          if (!pool.busy.has(connection)) return;
          if (client.getTransactionStatus() !== "I") {
            this.#destroy(connection, "discarded", true);
            return;
          }
          this.#putBack(connection);
        },
        (resetError: unknown) => {
          this.options.onError?.(pool.database, resetError);
          this.#destroy(connection, "discarded", true);
        },
      );
  }

  /** A busy connection, reset and outside any transaction, goes back to its pool's idle ones. */
  #putBack(connection: Connection): void {
    const pool = connection.pool;
    if (pool.retired || this.#closed) {
      void this.#destroy(connection, "closed");
      return;
    }
    pool.busy.delete(connection);
    connection.idleSince = Date.now();
    pool.idle.push(connection);
    const starving = this.#roomUnderCap() <= 0 ? this.#starving() : undefined;
    if (starving !== undefined) {
      // At the cap, a database without any connection gets this slot before our own next caller.
      starving.freeing++;
      void this.#destroy(connection, "stolen").finally(() => starving.freeing--);
      return;
    }
    this.#pulse();
  }

  #pool(database: string): DatabasePool {
    let pool = this.#pools.get(database);
    if (pool === undefined) {
      pool = new DatabasePool(database);
      this.#poolsCreated++;
    } else {
      this.#pools.delete(database); // re-inserted last: most recently used
    }
    this.#pools.set(database, pool);
    return pool;
  }

  /**
   * The scheduler: run after every change of state. Changes made while it runs
   * (a connection closed to make room) only ask for another round, so that
   * no nested round can spend a slot this one has counted on.
   */
  #pulse(): void {
    if (this.#closed) return;
    if (this.#pulsing) {
      this.#pulseAgain = true;
      return;
    }
    this.#pulsing = true;
    try {
      do {
        this.#pulseAgain = false;
        this.#pulseOnce();
      } while (this.#pulseAgain && !this.#closed);
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
      if (pool.waiters.length > 0 && pool.size === 0 && !this.#refused(pool, now) && this.#makeRoom(pool)) this.#open(pool);
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
      while (needed > 0 && pool.size < this.options.maxConnectionsPerPool && this.#roomUnderCap() > 0) {
        this.#open(pool);
        needed--;
      }
      if (needed <= 0 || pool.size >= this.options.maxConnectionsPerPool) continue;
      const waited = now - pool.waiters[0]!.since;
      if (waited < stealAfterWait) {
        this.#pulseIn(stealAfterWait - waited);
        continue;
      }
      while (needed > 0 && pool.size < this.options.maxConnectionsPerPool && this.#makeRoom(pool, STEAL_AFTER_IDLE_MILLIS)) {
        this.#open(pool);
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
      if (!this.#closed) this.#pulse();
    }, millis);
    timer.unref();
    this.#later = { due, timer };
  }

  /** Connections that can still be opened under the global cap (closing ones count until gone). */
  #roomUnderCap(): number {
    return this.options.maxTotalConnections - this.#total - this.#closing;
  }

  /**
   * A database with callers waiting and no connection at all, that may open
   * one now, and for which no other database's connection is closing already:
   * not one that PostgreSQL refused and that waits out its backoff (a slot
   * freed for it would go unused, and the connection closed for it reopened).
   */
  #starving(): DatabasePool | undefined {
    const now = performance.now();
    for (const pool of this.#waiting) {
      if (pool.waiters.length > 0 && pool.size === 0 && pool.freeing === 0 && !inBackoff(pool, now)) return pool;
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
    if (this.#roomUnderCap() > 0) return true;
    if (forPool.freeing > 0) return false;
    // A connection a database can spare (it keeps another) before a database's last one.
    let spare: Connection | undefined;
    let last: Connection | undefined;
    const idleSince = Date.now() - minIdleMillis;
    for (const pool of this.#pools.values()) {
      if (pool === forPool || pool.waiters.length > 0) continue;
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
    void this.#destroy(victim, "stolen").finally(() => forPool.freeing--);
    return false;
  }

  #open(pool: DatabasePool): void {
    if (pool.size === 0) this.#withConnections++;
    pool.connecting++;
    this.#total++;
    const client = new pg.Client({ ...this.options.connectionFor(pool.database), types: TEXT_PASSTHROUGH, application_name: "db-gateway", keepAlive: true });
    passDataRowBytes(client);
    client.connect().then(
      () => {
        pool.connecting--;
        pool.counters.opened++;
        pool.refused = undefined;
        const now = Date.now();
        const connection: Connection = { client, pool, createdAt: now, idleSince: now };
        client.on("error", (err) => {
          // An idle connection's backend died (restart, pg_terminate_backend): forget it.
          if (pool.idle.includes(connection)) {
            this.options.onError?.(pool.database, err);
            this.#destroy(connection, "discarded", true);
          }
        });
        if (pool.retired || this.#closed) {
          pool.counters.closed++;
          this.#total--;
          this.#shrunk(pool);
          void this.#close(connection, false);
          return;
        }
        pool.idle.push(connection);
        this.#pulse();
      },
      (err: unknown) => {
        pool.connecting--;
        this.#total--;
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
          // Refusals of one round of opens (its backoff not over yet) count once.
          const now = performance.now();
          const previous = pool.refused;
          if (previous === undefined) this.options.onError?.(database, err);
          if (previous !== undefined && inBackoff(pool, now)) {
            pool.refused = { ...previous, at: now, error: err };
          } else {
            const backoffMillis = previous === undefined ? REFUSED_BACKOFF_MILLIS : Math.min(2 * previous.backoffMillis, REFUSED_BACKOFF_MAX_MILLIS);
            pool.refused = { at: now, until: now + backoffMillis, backoffMillis, error: err };
          }
        } else {
          // Only the oldest caller fails, so that a brief failure does not fail a whole queue.
          pool.waiters
            .shift()
            ?.reject(new GatewayError("DATABASE_UNAVAILABLE", `database "${database}" is unavailable`, { metadata: { database }, cause: err }));
        }
        this.#pulse();
      },
    );
  }

  /**
   * Takes a pool out of the manager's: its connections are closed as they come
   * back. Its counters count in the totals still, once all its connections are
   * gone in `#gone` (until then, it may still count one opening).
   */
  #retire(pool: DatabasePool): void {
    this.#pools.delete(pool.database);
    pool.retired = true;
    if (pool.size > 0) this.#retiring.add(pool);
    else addCounters(this.#gone, pool.counters);
  }

  /** After a pool lost a connection (or one being opened): if that was its last, it no longer counts in `#withConnections`, and if retired, it is gone. */
  #shrunk(pool: DatabasePool): void {
    if (pool.size > 0) return;
    this.#withConnections--;
    if (this.#retiring.delete(pool)) addCounters(this.#gone, pool.counters);
  }

  /** Removes a connection from its pool and closes it; `force` drops the socket instead of saying goodbye. */
  #destroy(connection: Connection, why: "closed" | "stolen" | "idleClosed" | "expired" | "discarded", force = false): Promise<void> {
    const pool = connection.pool;
    const at = pool.idle.indexOf(connection);
    if (at >= 0) pool.idle.splice(at, 1);
    else if (!pool.busy.delete(connection)) return Promise.resolve();
    pool.counters.closed++;
    if (why !== "closed") pool.counters[why]++;
    this.#total--;
    this.#shrunk(pool);
    const ending = this.#close(connection, force);
    this.#pulse();
    return ending;
  }

  /**
   * Closes a connection no longer counted in its pool; it counts against the
   * cap (`#closing`) until its socket has closed, by when its backend is gone.
   */
  #close(connection: Connection, force: boolean): Promise<void> {
    this.#closing++;
    return (force ? this.#kill(connection) : this.#end(connection)).then(() => {
      this.#closing--;
      this.#pulse();
    });
  }

  #end(connection: Connection): Promise<void> {
    return connection.client.end().catch(() => undefined);
  }

  #kill(connection: Connection): Promise<void> {
    connection.client.on("error", () => undefined);
    destroyConnection(connection.client);
    return Promise.resolve();
  }

  /** Beyond `maxPools` pools with connections, closes the least recently used pools that no call is using. */
  #enforcePoolLimit(): void {
    if (this.#withConnections <= this.options.maxPools) return; // the common case, without looking at every pool
    let withConnections = 0;
    for (const p of this.#pools.values()) if (p.size > 0) withConnections++;
    for (const pool of this.#pools.values()) {
      if (withConnections <= this.options.maxPools) break;
      if (pool.size > 0 && pool.busy.size === 0 && pool.connecting === 0 && pool.waiters.length === 0) {
        this.#evict(pool);
        withConnections--;
      }
    }
  }

  #evict(pool: DatabasePool): void {
    this.#retire(pool);
    this.#evictions++;
    for (const connection of [...pool.idle]) void this.#destroy(connection, "closed");
  }

  /** Enforces idle timeouts and lifetimes, keeps one warm connection per active pool, forgets unused pools. */
  #reap(): void {
    const now = Date.now();
    for (const pool of [...this.#pools.values()]) {
      const inUse = pool.busy.size > 0 || pool.connecting > 0 || pool.waiters.length > 0;
      if (!inUse && now - pool.lastUsedAt > this.options.poolIdleTimeoutMillis) {
        this.#evict(pool);
        continue;
      }
      for (const connection of [...pool.idle]) {
        if (now - connection.createdAt > this.options.maxLifetimeMillis) {
          void this.#destroy(connection, "expired");
        } else if (now - connection.idleSince > this.options.connectionIdleTimeoutMillis && pool.size > 1) {
          void this.#destroy(connection, "idleClosed");
        }
      }
      // One warm connection per active pool, if it fits under the cap without taking anyone's.
      if (pool.size === 0 && !this.#closed && this.#roomUnderCap() > 0 && !this.#refused(pool, performance.now())) this.#open(pool);
    }
    this.#pulse();
  }
}

function noop(): void {}

/** Whether the database waits out a backoff after PostgreSQL refused it a connection (see `DatabasePool.refused`). */
function inBackoff(pool: DatabasePool, now: number): boolean {
  return pool.refused !== undefined && now < pool.refused.until;
}
