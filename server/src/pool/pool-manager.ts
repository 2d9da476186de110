// Per-database connection pools under one global cap: fair leases within deadlines, cancellation, connections reset or destroyed before reuse.
import type pg from "pg";
import { beforeStatement, GatewayError } from "../errors.js";
import { withSpan } from "../telemetry/tracing.js";
import { ConnectionReset, RESET_STATEMENT } from "./connection-reset.js";
import { TEXT_PASSTHROUGH, type Connection } from "./database-pool.js";
import type { CallLimits, PoolManagerOptions } from "./pool-options.js";
import type { ManagerStats, PoolStats } from "./pool-stats.js";
import { Scheduler } from "./scheduler.js";

export type { CallLimits, ManagerStats, PoolManagerOptions, PoolStats };
export { RESET_STATEMENT, TEXT_PASSTHROUGH };

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

/**
 * Per-database connection pools under one global cap: `Scheduler`
 * (scheduler.ts) decides who gets a connection, fairly between databases,
 * and which pools and connections are closed.
 * `ConnectionReset` (connection-reset.ts) gives each connection back when
 * its call is over: reset, or destroyed if anything is in doubt.
 */
export class PoolManager {
  readonly #scheduler: Scheduler;
  readonly #reset: ConnectionReset;
  /** The interruption of each call holding a connection (see `withConnection`), for `stop`. */
  readonly #leases = new Set<(err: GatewayError) => void>();

  constructor(options: PoolManagerOptions) {
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
      cancelAgain: () => (reason !== undefined && cancelOnRecovery ? this.#reset.cancel(connection) : Promise.resolve(false)),
    };
    const work = (async () => fn(lease))();
    try {
      const result = await Promise.race([work, interrupted]);
      this.#reset.release(connection, undefined, reset);
      return result;
    } catch (err) {
      if (reason !== undefined) void this.#reset.recover(connection, work, cancelOnRecovery);
      else this.#reset.release(connection, err);
      throw err;
    } finally {
      this.#leases.delete(interrupt);
      clearTimeout(timer);
      limits.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Closes a database's pool: waiting calls fail with DATABASE_NOT_FOUND, connections close once released. */
  close(database: string): void {
    this.#scheduler.close(database);
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
    for (const interrupt of [...this.#leases]) interrupt(running);
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
    return this.#scheduler.poolKey(database);
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
    return this.#scheduler.poolStats();
  }

  /** Totals over every pool, those since closed included. */
  stats(): ManagerStats {
    return this.#scheduler.stats();
  }
}

function noop(): void {}
