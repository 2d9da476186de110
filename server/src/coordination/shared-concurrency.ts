// Statements in flight counted over all gateways: each publishes its own counts in Redis with a heartbeat, and reads the others', which expire with a gateway that stops.
import { randomBytes } from "node:crypto";
import type { SharedRedis } from "./shared-redis.js";

/**
 * One heartbeat, atomically: this gateway (ARGV[2]) is listed in the sorted
 * set KEYS[1] at Redis's time, gateways not seen for ARGV[3] ms are dropped
 * from it, its counts (ARGV[4…], name and count in turn) replace its hash
 * KEYS[2], which expires after ARGV[3] ms unless the next heartbeat renews
 * it; then the sums of every other listed gateway's counts, read from
 * ARGV[1] .. id (their hashes' keys, prefix included), are returned as name,
 * count, … So a gateway killed mid-statement holds its slots for ARGV[3] ms at
 * most: its hash expires and it leaves the set.
 */
const HEARTBEAT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('DEL', KEYS[2])
-- In slices: unpack's results are bounded by Lua's stack.
for first = 4, #ARGV, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if #ARGV > 3 then redis.call('PEXPIRE', KEYS[2], ttl) end
local sums, names = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[2] then
    local counts = redis.call('HGETALL', ARGV[1] .. id)
    for i = 1, #counts, 2 do
      local name = counts[i]
      if sums[name] == nil then sums[name] = 0; names[#names + 1] = name end
      sums[name] = sums[name] + tonumber(counts[i + 1])
    end
  end
end
local out = {}
for _, name in ipairs(names) do out[#out + 1] = name; out[#out + 1] = sums[name] end
return out
`;

type Heartbeat = (gateways: string, own: string, othersPrefix: string, id: string, ttl: number, ...counts: (string | number)[]) => Promise<(string | number)[]>;

/** How often a gateway publishes its counts and reads the others'. */
const HEARTBEAT_MILLIS = 250;
/** A gateway not heard from for this long counts for nothing: its statements' slots are free again. */
const EXPIRY_MILLIS = 4 * HEARTBEAT_MILLIS;

/**
 * Statements in flight per scope (a platform's, a database's) over every
 * gateway using the same Redis, by per-gateway counters with a heartbeat:
 * every 250 ms each gateway replaces its own counts in Redis and reads the
 * sum of the others'. A gateway that stops (killed, cut off) is forgotten a
 * second after its last heartbeat, so it cannot hold slots forever. The
 * others' counts are as of their last heartbeat: gateways admitting at the
 * same moment can together pass a limit for that long. While Redis does not
 * answer, the others count for nothing (each gateway its own).
 * Keys: `{prefix}concurrency:gateways` (a sorted set), `{prefix}concurrency:gateway:{id}` (hashes).
 */
export class SharedConcurrency {
  readonly #id = randomBytes(8).toString("hex");
  readonly #heartbeat: Heartbeat;
  #timer: NodeJS.Timeout | undefined;
  #beating = false;

  /**
   * `own` lists this gateway's counts to publish (scopes with a limit and
   * statements in flight); `others` is told the others' sums after each
   * heartbeat (an empty map while Redis does not answer).
   */
  constructor(
    private readonly redis: SharedRedis,
    private readonly own: () => Iterable<[string, number]>,
    private readonly others: (sums: ReadonlyMap<string, number>) => void,
  ) {
    redis.client.defineCommand("dbgatewayConcurrencyHeartbeat", { numberOfKeys: 2, lua: HEARTBEAT });
    const client = redis.client as unknown as { dbgatewayConcurrencyHeartbeat: Heartbeat };
    this.#heartbeat = (...args) => client.dbgatewayConcurrencyHeartbeat(...args);
  }

  /** Starts the heartbeat (one at a time; the first at once). */
  start(): void {
    this.#timer = setInterval(() => void this.beat(), HEARTBEAT_MILLIS);
    this.#timer.unref();
    void this.beat();
  }

  /** One heartbeat now: publishes this gateway's counts and takes the others' (what the timer runs). */
  async beat(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    try {
      const counts: (string | number)[] = [];
      for (const [name, count] of this.own()) if (count > 0) counts.push(name, count);
      const reply = await this.redis.run(() =>
        this.#heartbeat(
          "concurrency:gateways",
          `concurrency:gateway:${this.#id}`,
          `${this.redis.options.keyPrefix}concurrency:gateway:`,
          this.#id,
          EXPIRY_MILLIS,
          ...counts,
        ),
      );
      const sums = new Map<string, number>();
      for (let i = 0; reply !== undefined && i + 1 < reply.length; i += 2) sums.set(String(reply[i]), Number(reply[i + 1]));
      this.others(sums);
    } finally {
      this.#beating = false;
    }
  }

  /** Stops the heartbeat and removes this gateway's counts (a gateway that stops without it is forgotten after the expiry). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.redis.run((client) => client.multi().zrem("concurrency:gateways", this.#id).del(`concurrency:gateway:${this.#id}`).exec());
  }
}
