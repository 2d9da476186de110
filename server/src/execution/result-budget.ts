// The memory that buffered results may take: each call's limits and the gateway-wide budget they draw on.

/** Limits of buffered results: per call (rows and encoded bytes) and for all calls together. */
export interface ResultLimits {
  /** Rows one buffered result may have (a Batch's results: together). */
  maxRows: number;
  /** Encoded bytes of the rows of one buffered result (a Batch's results: together). */
  maxBytes: number;
  /** Bytes of every buffered result in the gateway at once, from their first row until they have been written out. */
  maxBufferedBytes: number;
}

/**
 * The defaults (README, "Settings"): a result of up to 64 MiB fits four
 * times over in the SDK's default receive limit (256 MiB) with room to
 * spare, a million rows is more than any page of a UI or an API, and four
 * such results may be buffered at once. StreamQuery reads anything larger.
 */
export const DEFAULT_RESULT_LIMITS: Readonly<ResultLimits> = Object.freeze({
  maxRows: 1_000_000,
  maxBytes: 64 * 1024 * 1024,
  maxBufferedBytes: 256 * 1024 * 1024,
});

/**
 * A result may take its first this many bytes even when the budget is used
 * up: large results are refused first, and small ones (a point select) are
 * never starved by them. Larger results draw on the budget in steps of this
 * size, so that the budget is looked at once per step, not once per row.
 */
export const RESULT_STEP_BYTES = 64 * 1024;

/**
 * The gateway-wide budget for buffered results (`maxBufferedBytes`), shared
 * by every call: results take their bytes from it as their rows arrive and
 * give them back once the response carrying them has been written out (or
 * the call has ended). Beyond `RESULT_STEP_BYTES`, a result whose next step
 * does not fit is refused (RESULT_MEMORY_EXHAUSTED).
 */
export class ResultBudget {
  #used = 0;

  constructor(readonly limits: Readonly<ResultLimits>) {
    for (const [name, value] of Object.entries(limits)) {
      if (!(Number.isSafeInteger(value) && value >= 1)) throw new RangeError(`result limit ${name} must be a whole number of at least 1`);
    }
  }

  /** Bytes taken now. */
  get usedBytes(): number {
    return this.#used;
  }

  /**
   * An account for one call's results (see `ResultAccount`); `whole`: the
   * per-call limits apply to its results together (a Batch, whose results
   * travel in one response), else to each result on its own.
   */
  account(whole = false): ResultAccount {
    return new ResultAccount(this, whole);
  }

  /**
   * Runs `fn` with an account of its own (see `account`). What `fn` returns
   * carries the account's release (a response's `onSent`); if `fn` throws,
   * the account is released at once.
   */
  async withAccount<T>(fn: (account: ResultAccount) => Promise<T>, whole = false): Promise<T> {
    const account = this.account(whole);
    try {
      return await fn(account);
    } catch (err) {
      account.release();
      throw err;
    }
  }

  /** Takes `bytes` if they fit (or `always`); false when they do not. */
  take(bytes: number, always: boolean): boolean {
    if (!always && this.#used + bytes > this.limits.maxBufferedBytes) return false;
    this.#used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#used -= bytes;
  }
}

/**
 * What one call's buffered results hold of the budget: a Query, QueryMany or
 * Batch call, a QueryStream message, a transaction statement. Everything it
 * holds goes back at once with `release`, however its results ended (sent,
 * failed, dropped by an interrupted call), after which it takes nothing more.
 */
export class ResultAccount {
  #held = 0;
  #released = false;
  /** Rows and bytes of the results finished so far, when the limits apply to all together (`whole`). */
  rows = 0;
  bytes = 0;

  constructor(
    readonly budget: ResultBudget,
    readonly whole: boolean,
  ) {}

  get limits(): Readonly<ResultLimits> {
    return this.budget.limits;
  }

  /** Whether `release` has been called: its results are no longer wanted. */
  get released(): boolean {
    return this.#released;
  }

  /** Takes `bytes` more (see `ResultBudget.take`); false when they do not fit, or once released. */
  take(bytes: number, always: boolean): boolean {
    if (this.#released || !this.budget.take(bytes, always)) return false;
    this.#held += bytes;
    return true;
  }

  /** Gives back `bytes` of those it holds (nothing once released: all went back then). */
  give(bytes: number): void {
    if (this.#released) return;
    this.#held -= bytes;
    this.budget.give(bytes);
  }

  /** Gives back everything held. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.budget.give(this.#held);
    this.#held = 0;
  }
}
