// A connection leased to one call, and the call's interruption: by its deadline, its cancellation, its own code or the gateway's shutdown.
import type pg from "pg";
import { GatewayError } from "../errors.js";
import type { ConnectionReset } from "./connection-reset.js";
import type { Connection } from "./database-pool.js";
import type { CallLimits } from "./pool-options.js";

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
 * The lease `PoolManager.withConnection` gives a call. It is interrupted
 * when the call's deadline passes (DEADLINE_EXCEEDED), its signal aborts
 * (CANCELLED), or `interrupt` is called: `interrupted` rejects with that
 * error at once, and `signal` and the `onInterrupt` listeners learn of it.
 * Its AbortSignal is made only for a lease user that asks for it.
 */
export class CallLease implements Lease {
  readonly client: pg.Client;
  readonly database: string;
  /** Rejects with the interruption's error once the call is interrupted; never resolves. */
  readonly interrupted: Promise<never>;
  #rejectInterrupted!: (err: GatewayError) => void;
  /** The interruption's error, once interrupted. */
  #reason: GatewayError | undefined;
  #abort: AbortController | undefined;
  #listeners: (() => void)[] | undefined;
  /** Within `uninterruptible`, and the error it ends the call with if interrupted meanwhile. */
  #shielded = false;
  #shield: (() => GatewayError) | undefined;
  #cancelOnRecovery = true;
  #markedReset = false;
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #onAbort: () => void;

  constructor(
    private readonly connection: Connection,
    private readonly limits: CallLimits,
    private readonly connections: ConnectionReset,
  ) {
    this.client = connection.client;
    this.database = connection.pool.database;
    this.interrupted = new Promise<never>((_, reject) => (this.#rejectInterrupted = reject));
    this.interrupted.catch(noop);
    const remaining = limits.deadline - Date.now();
    this.#timer = Number.isFinite(remaining)
      ? setTimeout(() => this.interrupt(new GatewayError("DEADLINE_EXCEEDED", "the call's deadline passed while the statement ran")), Math.max(0, remaining))
      : undefined;
    this.#onAbort = () => this.interrupt(new GatewayError("CANCELLED", "the call was cancelled"));
    if (limits.signal?.aborted) this.#onAbort();
    else limits.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Whether the call has been interrupted. */
  get isInterrupted(): boolean {
    return this.#reason !== undefined;
  }

  /** Whether recovery should cancel the backend's statement: not if the call was interrupted during `uninterruptible` work. */
  get cancelsOnRecovery(): boolean {
    return this.#cancelOnRecovery;
  }

  /** Whether the call said the connection is reset already (`markReset`). */
  get wasReset(): boolean {
    return this.#markedReset;
  }

  get signal(): AbortSignal {
    if (this.#abort === undefined) {
      this.#abort = new AbortController();
      if (this.#reason !== undefined) this.#abort.abort(this.#reason);
    }
    return this.#abort.signal;
  }

  throwIfInterrupted(): void {
    if (this.#reason !== undefined) throw this.#reason;
  }

  onInterrupt(listener: () => void): () => void {
    if (this.#reason !== undefined) {
      listener();
      return noop;
    }
    const listeners = (this.#listeners ??= []);
    listeners.push(listener);
    return () => {
      const at = listeners.indexOf(listener);
      if (at >= 0) listeners.splice(at, 1);
    };
  }

  interrupt(err: GatewayError): void {
    if (this.#reason !== undefined) return;
    this.#cancelOnRecovery = !this.#shielded;
    const reason = this.#shield?.() ?? err;
    this.#reason = reason;
    // The call fails first (its handlers run later, as microtasks), whatever a listener does.
    this.#rejectInterrupted(reason);
    this.#abort?.abort(reason);
    if (this.#listeners !== undefined) for (const listener of this.#listeners.splice(0)) listener();
  }

  async uninterruptible<T>(work: () => Promise<T>, outcome?: () => GatewayError): Promise<T> {
    this.#shielded = true;
    this.#shield = outcome;
    try {
      return await work();
    } finally {
      this.#shielded = false;
      this.#shield = undefined;
    }
  }

  markReset(): void {
    this.#markedReset = true;
  }

  cancelAgain(): Promise<boolean> {
    return this.#reason !== undefined && this.#cancelOnRecovery ? this.connections.cancel(this.connection) : Promise.resolve(false);
  }

  /** Once the call is over: its deadline and signal no longer interrupt it. */
  end(): void {
    clearTimeout(this.#timer);
    this.limits.signal?.removeEventListener("abort", this.#onAbort);
  }
}

function noop(): void {}
