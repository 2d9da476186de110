// The entry to pool/: per-database connection pools under one global cap, a call leased a connection within its deadline, and the connection given back reset or destroyed.
import { beforeStatement, GatewayError } from "../errors.js";
import { withSpan } from "../telemetry/tracing.js";
import { ConnectionReset, RESET_STATEMENT } from "./connection-reset.js";
import { TEXT_PASSTHROUGH, type Connection } from "./database-pool.js";
import { CallLease, type Lease } from "./lease.js";
import type { CallLimits, PoolManagerOptions } from "./pool-options.js";
import type { ManagerStats, PoolStats } from "./pool-stats.js";
import { Scheduler } from "./scheduler.js";

export type { CallLimits, Lease, ManagerStats, PoolManagerOptions, PoolStats };
export { RESET_STATEMENT, TEXT_PASSTHROUGH };

/**
 * Per-database connection pools under one global cap, the entry to pool/ for
 * the layers above. `Scheduler` (scheduler.ts) decides who gets a connection,
 * fairly between databases, and which pools and connections are closed; a
 * call holds its connection through a `CallLease` (lease.ts), which its
 * deadline, its cancellation or its own code interrupts; `ConnectionReset`
 * (connection-reset.ts) gives the connection back when the call is over:
 * reset, or destroyed if anything is in doubt.
 */
export class PoolManager {
  readonly #scheduler: Scheduler;
  readonly #reset: ConnectionReset;
  /** The lease of each call holding a connection (see `withConnection`), for `stop`. */
  readonly #leases = new Set<CallLease>();

  constructor(private readonly options: PoolManagerOptions) {
    this.#scheduler = new Scheduler(options);
    this.#reset = new ConnectionReset(this.#scheduler, options);
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
    const holding = this.options.hold?.(database, limits);
    if (holding !== undefined) {
      try {
        await holding;
      } catch (err) {
        throw beforeStatement(err);
      }
    }
    const admit = limits.unmetered ? undefined : this.options.admit;
    if (admit === undefined) return this.#withConnection(database, fn, limits);
    let leave: () => void;
    try {
      leave = admit(database);
    } catch (err) {
      throw beforeStatement(err);
    }
    try {
      return await this.#withConnection(database, fn, limits);
    } finally {
      leave();
    }
  }

  async #withConnection<T>(database: string, fn: (lease: Lease) => Promise<T>, limits: CallLimits): Promise<T> {
    let connection: Connection;
    try {
      connection = await withSpan("pool.acquire", { "db.namespace": database }, () => this.#scheduler.acquire(database, limits));
    } catch (err) {
      throw beforeStatement(err);
    }
    const stopped = this.#scheduler.stopped;
    if (stopped !== undefined) {
      // Stopped while the connection was being checked: the call has not begun.
      this.#reset.release(connection, undefined);
      throw beforeStatement(stopped);
    }
    // Held for long (LISTEN): the scheduler does not count it as one of the pool's connections for calls, until it is given back.
    const held = limits.held === true ? connection.pool : undefined;
    if (held) held.held++;
    const lease = new CallLease(connection, limits, this.#reset);
    this.#leases.add(lease);
    const work = (async () => fn(lease))();
    try {
      const result = await lease.outcome(work);
      if (held) held.held--;
      // Interrupted, yet its outcome was the work's (`Lease.settledByWork`): reused once its cancels are delivered.
      if (lease.isInterrupted) void this.#reset.recover(connection, work, false, () => lease.cancelsDelivered(), lease.wasReset);
      else this.#reset.release(connection, undefined, lease.wasReset);
      return result;
    } catch (err) {
      if (held) held.held--;
      if (lease.isInterrupted) void this.#reset.recover(connection, work, lease.cancelsOnRecovery, () => lease.cancelsDelivered());
      else this.#reset.release(connection, err);
      throw err;
    } finally {
      this.#leases.delete(lease);
      lease.end();
    }
  }

  /** Reads every pool's share of the cap again (`PoolManagerOptions.shareOf`), after the quotas changed. */
  reshare(): void {
    this.#scheduler.pools.reshare();
  }

  /** Closes a database's pool: waiting calls fail with `error` (default DATABASE_NOT_FOUND), connections close once released. */
  close(database: string, error?: GatewayError): void {
    this.#scheduler.pools.close(database, error);
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
    this.#scheduler.stop(new GatewayError("SHUTTING_DOWN", "the gateway shut down before the call had a connection: it was not run"));
    const running = new GatewayError("SHUTTING_DOWN", "the gateway shut down while the statement ran: it may have run", {
      metadata: { statement_sent: "true" },
    });
    for (const lease of [...this.#leases]) lease.interrupt(running);
  }

  /** Closes every pool and stops the reaper. */
  closeAll(): Promise<void> {
    return this.#scheduler.closeAll();
  }

  /**
   * The identity of the database's pool for as long as the pool lives,
   * undefined when it has none: a key (in a WeakMap) for what a caller learns
   * of a database and forgets with its pool, as QueryMany its time per
   * statement.
   */
  poolKey(database: string): object | undefined {
    return this.#scheduler.pools.byDatabase.get(database);
  }

  /**
   * Connections a call to the database could have now without waiting: idle
   * ones no one waits for, and new ones that fit under the pool's and the
   * global cap.
   */
  available(database: string): number {
    return this.#scheduler.available(database);
  }

  /** Per-pool statistics, most recently used first. */
  poolStats(): PoolStats[] {
    return this.#scheduler.pools.poolStats();
  }

  /** Totals over every pool, those since closed included. */
  stats(): ManagerStats {
    return this.#scheduler.pools.stats();
  }
}
