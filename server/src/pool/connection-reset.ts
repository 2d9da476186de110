// How a call's connection goes back to its pool: reset (ROLLBACK, DISCARD ALL) or destroyed; after an interruption, its statement cancelled and waited for first.
import { leavesConnectionUsable } from "../errors.js";
import { sendCancelRequest } from "./cancel-request.js";
import type { Connection } from "./database-pool.js";
import { activeQueryOf, isQueryable } from "./pg-internals.js";
import type { PoolManagerOptions } from "./pool-options.js";
import type { Scheduler } from "./scheduler.js";

/** What resets a connection between calls (see `ConnectionReset`). */
export const RESET_STATEMENT = "DISCARD ALL";

/** A connection whose reset (ROLLBACK, DISCARD ALL) takes longer than this is destroyed. */
const RESET_TIMEOUT_MILLIS = 10_000;

/**
 * Gives connections back to the scheduler when their calls are over. A
 * connection goes back to its pool only if it is outside any transaction and
 * `DISCARD ALL` succeeded on it, so no session state (SET, PREPARE, temporary
 * tables, LISTEN, advisory locks) reaches the next call; anything in doubt is
 * destroyed. After an interruption, it is reused only once the call's work
 * has settled and the cancel request has been delivered (`recover`).
 */
export class ConnectionReset {
  constructor(
    private readonly scheduler: Scheduler,
    private readonly options: PoolManagerOptions,
  ) {}

  /**
   * Gives a connection back once its call is over (`err`: how the call
   * ended, if it failed): reset with `DISCARD ALL`, after a `ROLLBACK` if the
   * call left a transaction open, or destroyed if it is broken, still busy,
   * too old, or its reset fails. `alreadyReset`: the call ended with
   * `DISCARD ALL` itself (`Lease.markReset`).
   */
  release(connection: Connection, err: unknown, alreadyReset = false): void {
    const pool = connection.pool;
    if (!pool.busy.has(connection)) return; // already destroyed (interrupted)
    if (!this.scheduler.takesBack(connection)) {
      void this.scheduler.pools.destroy(connection, "closed");
      return;
    }
    const client = connection.client;
    if ((err !== undefined && !leavesConnectionUsable(err)) || !isQueryable(client) || activeQueryOf(client)) {
      // Broken, or still busy with something its call walked away from (an unclosed cursor).
      void this.scheduler.pools.destroy(connection, "discarded", true);
      return;
    }
    if (Date.now() - connection.createdAt > this.options.maxLifetimeMillis) {
      void this.scheduler.pools.destroy(connection, "expired");
      return;
    }
    // DISCARD ALL: CLOSE ALL, RESET ALL (role and settings), DEALLOCATE ALL, UNLISTEN *,
    // pg_advisory_unlock_all(), DISCARD TEMP/PLANS/SEQUENCES. A transaction the call left
    // open (it cannot run inside one) is rolled back first. The caller already has its answer.
    const status = client.getTransactionStatus();
    if (alreadyReset && status === "I") {
      this.scheduler.putBack(connection);
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
            void this.scheduler.pools.destroy(connection, "discarded", true);
            return;
          }
          this.scheduler.putBack(connection);
        },
        (resetError: unknown) => {
          this.options.onError?.(pool.database, resetError);
          void this.scheduler.pools.destroy(connection, "discarded", true);
        },
      );
  }

  /**
   * After an interruption: cancels the backend's statement (unless it is an
   * uninterruptible COMMIT, or the call cancelled its statements itself),
   * waits (within the grace period) for the call's work to end and every
   * cancel to be delivered (this one, and those `sent` says the call sent,
   * asked once its work has ended), then releases the connection as usual;
   * destroys it if any is late or was not delivered (it could still reach a
   * later call's statement).
   */
  async recover(connection: Connection, work: Promise<unknown>, cancel: boolean, sent: () => Promise<boolean>, alreadyReset = false): Promise<void> {
    const grace = this.options.cancelGraceMillis;
    const own = cancel ? this.cancel(connection) : Promise.resolve(true);
    const outcome = work.then(
      () => ({ err: undefined as unknown }),
      (err: unknown) => ({ err }),
    );
    const cancelled = outcome.then(async () => (await own) && (await sent()));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), grace)));
    const ended = await Promise.race([Promise.all([outcome, cancelled]), late]);
    clearTimeout(timer);
    if (ended === "late" || !ended[1]) {
      void this.scheduler.pools.destroy(connection, "discarded", true);
      return;
    }
    this.release(connection, ended[0].err, alreadyReset && ended[0].err === undefined);
  }

  /** How long an interrupted call's backend has to stop (and its cancel to be delivered) before its connection is destroyed. */
  get graceMillis(): number {
    return this.options.cancelGraceMillis;
  }

  /** Asks PostgreSQL to cancel the connection's running statement; true once delivered within the grace period. */
  cancel(connection: Connection): Promise<boolean> {
    return sendCancelRequest(this.options.connectionFor(connection.pool.database), connection.client, this.options.cancelGraceMillis);
  }
}
