// The opt-in result cache shared by the gateways in Redis: a read's result kept under its database's generation, SQL and parameters; a write to the database starts a new generation.
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { GatewayError } from "../errors.js";
import { mayWrite } from "../execution/leading-keyword.js";
import { QueryRequestSchema, type QueryRequest } from "../../../wire/src/gen/dbgateway/v1/query_service_pb.js";
import type { SharedRedis } from "./shared-redis.js";

/** How large and how long results are kept. */
export interface ResultCacheLimits {
  /** The longest a result is kept, whatever a query asks. */
  maxTtlMillis: number;
  /** A result larger than this (its encoded bytes) is not kept. */
  maxBytes: number;
}

/** Ends the generation of a database if results were kept for it, else does nothing: one round trip. */
const BUMP = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end return 0`;

/**
 * Results kept in Redis for the queries that ask (`cache_ttl_ms`), keyed by
 * `result:{database}:{epoch}.{generation}:{sha256 of SQL and parameters}`.
 * A database's generation (`resultgen:{database}`, made when a result is
 * first looked up, outliving the results kept under it) is incremented by every write
 * to it through a gateway, before the write is answered, so that no one
 * reads a result older than a write once that write has answered. The epoch
 * (`resultepoch`) is incremented by each gateway when it reaches Redis again
 * after losing it, before it uses the cache: writes made while Redis was
 * away incremented nothing. While Redis is unreachable, nothing is read or
 * kept.
 */
export class ResultCache {
  #epochSeen = -1;
  #bumping: Promise<boolean> | undefined;

  constructor(
    private readonly redis: SharedRedis,
    private readonly limits: ResultCacheLimits,
  ) {}

  /** Checks a query that asks to be cached: a read only. */
  check(request: Pick<QueryRequest, "sql" | "cacheTtlMs">): void {
    if (request.cacheTtlMs > 0 && mayWrite(request.sql)) {
      throw new GatewayError("INVALID_REQUEST", "cache_ttl_ms is for statements that only read (SELECT, VALUES, TABLE, SHOW)");
    }
  }

  /**
   * The kept result of a query, or undefined, with `keep` to store the
   * result it gets otherwise, under the generation read before it ran. The
   * generation is made here if missing, before the query runs, so that a
   * write committed while it runs starts a new one.
   */
  async lookUp(database: string, request: QueryRequest): Promise<{ hit: Uint8Array | undefined; keep(result: Uint8Array): void }> {
    const none = { hit: undefined, keep: () => undefined };
    if (!(await this.#newEpochTaken())) return none;
    const generationKey = `resultgen:${database}`;
    // Outlives every result kept under it (see `keep`): a generation forgotten while its results live would start again at 0.
    const generationMillis = 2 * this.limits.maxTtlMillis + 60_000;
    const found = await this.redis.run((c) =>
      c.multi().set(generationKey, 0, "PX", generationMillis, "NX").pexpire(generationKey, generationMillis).mget("resultepoch", generationKey).exec(),
    );
    const [epoch, generation] = (found?.[2]?.[1] as (string | null)[] | undefined) ?? [];
    if (found === undefined || found === null || generation === undefined || generation === null) return none;
    const digest = createHash("sha256")
      .update(toBinary(QueryRequestSchema, create(QueryRequestSchema, { sql: request.sql, params: request.params })))
      .digest("base64url");
    const key = `result:${database}:${epoch ?? 0}.${generation}:${digest}`;
    const hit = await this.redis.run((c) => c.getBuffer(key));
    const ttl = Math.min(request.cacheTtlMs, this.limits.maxTtlMillis);
    return {
      hit: hit ?? undefined,
      keep: (result) => {
        if (result.byteLength > this.limits.maxBytes) return;
        void this.redis.run((c) => c.set(key, Buffer.from(result.buffer, result.byteOffset, result.byteLength), "PX", ttl));
      },
    };
  }

  /** Ends the kept results of a database (a write to it): resolves once done, or at once when Redis is unreachable. */
  async invalidate(database: string): Promise<void> {
    await this.redis.run((c) => c.eval(BUMP, 1, `resultgen:${database}`));
  }

  /**
   * Whether the cache may be used: Redis answers, and this gateway has
   * started a new epoch since it last reached Redis again after losing it
   * (its first connection starts none).
   */
  async #newEpochTaken(): Promise<boolean> {
    if (!this.redis.available) return false;
    const epoch = this.redis.epoch;
    if (this.#epochSeen === -1) this.#epochSeen = epoch;
    if (this.#epochSeen === epoch) return true;
    this.#bumping ??= this.redis
      .run((c) => c.incr("resultepoch"))
      .then((n) => {
        if (n !== undefined) this.#epochSeen = epoch;
        return n !== undefined;
      })
      .finally(() => (this.#bumping = undefined));
    return this.#bumping;
  }
}
