// The SDK's retries: a call run again after UNAVAILABLE only when that is safe, with jittered backoff within its deadline.
import { Code, GatewayError } from "./gateway-error.js";
import type { RetryOptions } from "./client-options.js";

/** What a call brings to `withRetries`. */
export interface RetryContext {
  /** The caller vouches that running the call twice does no harm (a read, an upsert …). */
  idempotent?: boolean;
  signal?: AbortSignal;
  /** The whole call's deadline, retries included. */
  timeoutMs?: number;
}

/**
 * Runs `attempt`, and runs it again after UNAVAILABLE when that is safe: the
 * call never reached PostgreSQL, or the caller marked it idempotent. Never
 * after COMMIT_OUTCOME_UNKNOWN. Backoff doubles from `baseDelayMs` with full
 * jitter, up to `maxDelayMs`, and never past the call's deadline; each
 * attempt gets the time that is left.
 */
export async function withRetries<T>(attempt: (timeoutMs: number | undefined) => Promise<T>, policy: Required<RetryOptions>, call: RetryContext): Promise<T> {
  const deadline = call.timeoutMs === undefined ? Infinity : Date.now() + call.timeoutMs;
  for (let n = 1; ; n++) {
    try {
      return await attempt(Number.isFinite(deadline) ? Math.max(1, deadline - Date.now()) : undefined);
    } catch (err) {
      const error = GatewayError.from(err);
      const safe = error.code === Code.Unavailable && error.reason !== "COMMIT_OUTCOME_UNKNOWN" && (call.idempotent === true || error.notSent);
      if (!safe || n >= policy.maxAttempts || call.signal?.aborted) throw error;
      const delay = Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (n - 1));
      if (Date.now() + delay >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
