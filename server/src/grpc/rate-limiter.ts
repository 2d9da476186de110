// Per-platform rate limits: a token bucket each, a call beyond it RATE_LIMITED with a RetryInfo saying when to try again.
import { create } from "@bufbuild/protobuf";
import { GatewayError } from "../errors.js";
import { RetryInfoSchema } from "../../../wire/src/gen/google/rpc/error_details_pb.js";

/**
 * A token bucket per platform: `ratePerSecond` calls a second on average,
 * with bursts of up to `burst`. A call beyond it fails at once with
 * RESOURCE_EXHAUSTED (RATE_LIMITED) and a `google.rpc.RetryInfo` saying when
 * a token will be there. Buckets are kept per configured platform only, so
 * their number is bounded.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
  ) {}

  /** Takes a token for the platform's call, or throws RATE_LIMITED. */
  take(platform: string): void {
    const now = performance.now();
    const bucket = this.#buckets.get(platform) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    this.#buckets.set(platform, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const waitNanos = BigInt(Math.ceil(((1 - bucket.tokens) / this.ratePerSecond) * 1e9));
    throw new GatewayError("RATE_LIMITED", `platform "${platform}" is over its rate limit of ${this.ratePerSecond} calls per second`, {
      metadata: { platform },
      details: [
        {
          schema: RetryInfoSchema,
          message: create(RetryInfoSchema, { retryDelay: { seconds: waitNanos / 1_000_000_000n, nanos: Number(waitNanos % 1_000_000_000n) } }),
        },
      ],
    });
  }
}
