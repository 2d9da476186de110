// Signed requests' nonces claimed in Redis, so that a request replayed to another gateway is refused there too.
import type { SharedRedis } from "./shared-redis.js";

/** The nonces of signed requests, shared by every gateway using the same Redis. Keys: `{prefix}nonce:{platform}:{nonce}`, expiring. */
export class SharedNonces {
  constructor(private readonly redis: SharedRedis) {}

  /** Whether the shared nonces are checked now (Redis answers); otherwise each gateway checks its own only. */
  get available(): boolean {
    return this.redis.available;
  }

  /**
   * Claims a platform's nonce for `forMillis` (SET NX PX): true when no
   * gateway had claimed it, false when one had (a replay), undefined when
   * Redis did not answer in time. Never rejects.
   */
  claim(platform: string, nonce: string, forMillis: number): Promise<boolean | undefined> {
    return this.redis.run(async (client) => (await client.set(`nonce:${platform}:${nonce}`, "1", "PX", forMillis, "NX")) === "OK");
  }
}
