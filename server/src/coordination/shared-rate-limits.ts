// Token buckets kept in Redis for all gateways together, taken by each gateway in small batches so that a call never waits for Redis.
import type { SharedRedis } from "./shared-redis.js";

/**
 * One token bucket, atomically: refilled at ARGV[1] tokens a second up to
 * ARGV[2] by Redis's own clock (gateways' clocks may differ), then up to
 * ARGV[3] whole tokens taken. Returns what it took and the milliseconds until
 * the next token (-1: never). The key expires once the bucket would be full
 * again, when a missing key means the same: Redis never fills with buckets.
 */
const TAKE_TOKENS = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local took = math.max(0, math.min(wanted, math.floor(tokens)))
tokens = tokens - took
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return { took, math.ceil(math.max(0, 1 - tokens) / rate * 1000) }
`;

type TakeTokens = (key: string, rate: number, burst: number, wanted: number) => Promise<[number, number]>;

/** A gateway holds at most this long of a bucket's rate, and a quarter of its burst (at least one token). */
const BATCH_MILLIS = 50;

/**
 * The platforms' and databases' rates shared through Redis: see `SharedTokens`.
 * Keys: `{prefix}rate:platform:{platform}`, `{prefix}rate:database:{platform}:{tenant id}`.
 */
export class SharedRateLimits {
  readonly #take: TakeTokens;

  constructor(readonly redis: SharedRedis) {
    redis.client.defineCommand("dbgatewayTakeTokens", { numberOfKeys: 1, lua: TAKE_TOKENS });
    const client = redis.client as unknown as { dbgatewayTakeTokens: TakeTokens };
    this.#take = (key, rate, burst, wanted) => client.dbgatewayTakeTokens(key, rate, burst, wanted);
  }

  /** Whether the shared buckets apply now (Redis answers); otherwise each gateway applies its own. */
  get available(): boolean {
    return this.redis.available;
  }

  /** The shared bucket of a scope's calls (`platform:{platform}`, `database:{platform}:{tenant id}`), with its rate and burst. */
  bucket(name: string, rate: number, burst: number): SharedTokens {
    return new SharedTokens(this, `rate:${name}`, rate, burst);
  }

  /** Takes up to `wanted` tokens from a shared bucket: how many it took and the wait for the next; undefined when Redis did not answer. */
  take(key: string, rate: number, burst: number, wanted: number): Promise<[number, number] | undefined> {
    return this.redis.run(() => this.#take(key, rate, burst, wanted));
  }
}

/**
 * This gateway's side of one shared bucket. It holds a few tokens taken from
 * Redis (a batch: at most 50 ms of the rate and a quarter of the burst) and
 * spends them without waiting; when they run low it takes more in the
 * background. A call that finds none may run on credit, up to a batch owed
 * and paid from the next tokens taken, unless Redis said last that the
 * bucket is empty: until its next token, calls are refused without asking
 * Redis. So the gateways together admit at most the bucket's tokens plus, per
 * gateway, a batch held and a batch owed; and over time exactly the rate.
 */
export class SharedTokens {
  readonly #batch: number;
  #held = 0;
  #owed = 0;
  #taking = false;
  /** Until then (performance.now()), Redis said the bucket is empty. */
  #emptyUntil = 0;
  #epoch: number;
  /** After a `take` that took fewer than wanted: milliseconds until it is worth trying again. */
  waitMillis = 0;

  constructor(
    private readonly limits: SharedRateLimits,
    readonly key: string,
    readonly rate: number,
    readonly burst: number,
  ) {
    this.#batch = Math.max(1, Math.min(Math.floor(burst / 4), Math.ceil((rate * BATCH_MILLIS) / 1000)));
    this.#epoch = limits.redis.epoch;
  }

  /** Takes up to `wanted` tokens, without waiting, and says how many it took. */
  take(wanted: number): number {
    if (this.#epoch !== this.limits.redis.epoch) {
      // Redis was away: what this gateway held or owed before is forgotten, as Redis may have been emptied.
      this.#epoch = this.limits.redis.epoch;
      [this.#held, this.#owed, this.#emptyUntil] = [0, 0, 0];
    }
    const now = performance.now();
    let took = Math.min(wanted, this.#held);
    this.#held -= took;
    const empty = now < this.#emptyUntil;
    if (took < wanted && !empty) {
      const credit = Math.min(wanted - took, this.#batch - this.#owed);
      this.#owed += credit;
      took += credit;
    }
    if (took < wanted) this.waitMillis = empty ? this.#emptyUntil - now : 1;
    if (!this.#taking && !empty && (this.#owed > 0 || this.#held * 2 < this.#batch)) this.#refill();
    return took;
  }

  #refill(): void {
    this.#taking = true;
    const wanted = this.#batch - this.#held + this.#owed;
    const epoch = this.#epoch;
    void this.limits.take(this.key, this.rate, this.burst, wanted).then((reply) => {
      this.#taking = false;
      if (reply === undefined || epoch !== this.#epoch) return; // Redis is away: the gateway's own bucket applies meanwhile
      const [took, waitMillis] = reply;
      const paid = Math.min(this.#owed, took);
      this.#owed -= paid;
      this.#held += took - paid;
      this.#emptyUntil = took < wanted ? performance.now() + Math.max(1, waitMillis) : 0;
    });
  }
}
