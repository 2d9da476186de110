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
   * Runs `work` (statements pipelined with their COMMIT) so that an
   * interruption meanwhile does not end the call at once: `work` cancels
   * what it still runs (`cancelAgain`) and settles with what PostgreSQL did,
   * which is the call's outcome. If it has not settled within the grace
   * period for cancels, the call ends with the error `late` makes.
   */
  settledByWork<T>(work: () => Promise<T>, late: () => GatewayError): Promise<T>;
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
 * (CANCELLED), or `interrupt` is called: `outcome` rejects with that error
 * at once, and `signal` and the `onInterrupt` listeners learn of it. Its
 * AbortSignal is made only for a lease user that asks for it. The leases of
 * one call's limits share one deadline timer and one listener on its signal
 * (`CallWatch`).
 */
export class CallLease implements Lease {
  readonly client: pg.Client;
  readonly database: string;
  /** What `outcome` rejects with once the call is interrupted (set while it waits). */
  #rejectOutcome: ((err: GatewayError) => void) | undefined;
  /** The interruption's error, once interrupted. */
  #reason: GatewayError | undefined;
  #abort: AbortController | undefined;
  #listeners: (() => void)[] | undefined;
  /** Within `uninterruptible`, and the error it ends the call with if interrupted meanwhile. */
  #shielded = false;
  #shield: (() => GatewayError) | undefined;
  #cancelOnRecovery = true;
  /** Within `settledByWork`: an interruption leaves the call's outcome to the work, and makes this error if the work is late. */
  #late: (() => GatewayError) | undefined;
  #markedReset = false;
  /** The cancels `cancelAgain` sent: each must be delivered before the connection serves another call. */
  readonly #cancels: Promise<boolean>[] = [];
  readonly #watch: CallWatch | undefined;

  constructor(
    private readonly connection: Connection,
    limits: CallLimits,
    private readonly connections: ConnectionReset,
  ) {
    this.client = connection.client;
    this.database = connection.pool.database;
    if (limits.signal?.aborted) this.interrupt(cancelled());
    else this.#watch = CallWatch.of(limits)?.add(this);
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

  /**
   * `work`'s outcome, or the interruption's error as soon as the call is
   * interrupted (whether `work` has settled or not). Once per lease.
   */
  outcome<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.#reason !== undefined) reject(this.#reason);
      else this.#rejectOutcome = reject;
      work.then(resolve, reject);
    });
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
    const late = this.#late;
    // Within `settledByWork` the work cancels its statements itself, and its outcome is the call's: only a late one ends the call here.
    this.#cancelOnRecovery = late === undefined && !this.#shielded;
    const reason = late === undefined ? (this.#shield?.() ?? err) : err;
    this.#reason = reason;
    // The call fails first (its handlers run later, as microtasks), whatever a listener does.
    if (late === undefined) this.#rejectOutcome?.(reason);
    else setTimeout(() => this.#rejectOutcome?.(late()), this.connections.graceMillis).unref();
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

  async settledByWork<T>(work: () => Promise<T>, late: () => GatewayError): Promise<T> {
    this.#late = late;
    try {
      return await work();
    } finally {
      this.#late = undefined;
    }
  }

  markReset(): void {
    this.#markedReset = true;
  }

  cancelAgain(): Promise<boolean> {
    const cancels = this.#cancelOnRecovery || this.#late !== undefined;
    if (this.#reason === undefined || !cancels) return Promise.resolve(false);
    const delivered = this.connections.cancel(this.connection);
    this.#cancels.push(delivered);
    return delivered;
  }

  /** Whether every cancel `cancelAgain` sent has been delivered (false as soon as one was not, within the grace period). */
  cancelsDelivered(): Promise<boolean> {
    return Promise.all(this.#cancels).then((delivered) => delivered.every(Boolean));
  }

  /** Once the call is over: its deadline and signal no longer interrupt it. */
  end(): void {
    this.#watch?.remove(this);
  }
}

/**
 * The deadline and signal of one call's limits, watched once for all the
 * leases it holds at a time (a QueryStream message's queries to many
 * databases each hold one): one timer and one abort listener, made with the
 * first lease and dropped with the last, instead of one of each per lease.
 * When the deadline passes or the signal aborts, every lease it watches is
 * interrupted and the watch is forgotten, so that a lease taken later gets a
 * watch of its own, which interrupts it at once.
 */
class CallWatch {
  static readonly #byLimits = new WeakMap<CallLimits, CallWatch>();
  readonly #leases = new Set<CallLease>();
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #onAbort: () => void;

  private constructor(private readonly limits: CallLimits) {
    const remaining = limits.deadline - Date.now();
    this.#timer = Number.isFinite(remaining)
      ? setTimeout(
          () => this.#interruptAll(() => new GatewayError("DEADLINE_EXCEEDED", "the call's deadline passed while the statement ran")),
          Math.max(0, remaining),
        )
      : undefined;
    this.#onAbort = () => this.#interruptAll(cancelled);
    limits.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** The watch of `limits`, made if there is none; undefined when they have neither a deadline nor a signal. */
  static of(limits: CallLimits): CallWatch | undefined {
    let watch = CallWatch.#byLimits.get(limits);
    if (watch === undefined) {
      if (!Number.isFinite(limits.deadline) && limits.signal === undefined) return undefined;
      watch = new CallWatch(limits);
      CallWatch.#byLimits.set(limits, watch);
    }
    return watch;
  }

  add(lease: CallLease): this {
    this.#leases.add(lease);
    return this;
  }

  remove(lease: CallLease): void {
    if (this.#leases.delete(lease) && this.#leases.size === 0) this.#stop();
  }

  #interruptAll(error: () => GatewayError): void {
    this.#stop();
    for (const lease of this.#leases) lease.interrupt(error());
  }

  #stop(): void {
    clearTimeout(this.#timer);
    this.limits.signal?.removeEventListener("abort", this.#onAbort);
    if (CallWatch.#byLimits.get(this.limits) === this) CallWatch.#byLimits.delete(this.limits);
  }
}

function cancelled(): GatewayError {
  return new GatewayError("CANCELLED", "the call was cancelled");
}

function noop(): void {}
