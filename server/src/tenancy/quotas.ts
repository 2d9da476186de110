// Quotas against noisy neighbours: each platform's and each tenant's calls per second, concurrent statements, share of the connection cap and longest statement.
import { create } from "@bufbuild/protobuf";
import { GatewayError } from "../errors.js";
import { RetryInfoSchema } from "../../../wire/src/gen/google/rpc/error_details_pb.js";
import type { SharedRateLimits, SharedTokens } from "../coordination/shared-rate-limits.js";
import { parseDatabaseName } from "./naming.js";

/** What a quota limits: a platform's calls together, each of its databases without a quota of its own, or one database. */
export type QuotaScope = "platform" | "each-tenant" | "tenant";

/** Limits of one scope; an absent limit is inherited (see `Quotas`), and absent everywhere means none. */
export interface QuotaLimits {
  callsPerSecond?: number;
  /** Calls that may be made at once before the rate applies: the rate (at least 1) when absent. */
  burst?: number;
  maxConcurrentStatements?: number;
  maxConnections?: number;
  maxStatementMillis?: number;
}

export const QUOTA_LIMITS = ["callsPerSecond", "burst", "maxConcurrentStatements", "maxConnections", "maxStatementMillis"] as const;

/** Limits stored in the catalog for a scope. */
export interface StoredQuota {
  platform: string;
  scope: QuotaScope;
  /** The tenant's id with scope "tenant" (empty for the main database); empty otherwise. */
  tenantId: string;
  limits: QuotaLimits;
  updatedAt: Date;
}

/** What applies where the catalog says nothing: from the gateway's settings. */
export interface QuotaDefaults {
  platform: QuotaLimits;
  tenant: QuotaLimits;
}

/** What applies where the catalog says nothing: the settings' rate limit for platforms, their pool size and statement time for databases. */
export function quotaDefaults(settings: {
  rateLimit: { perSecond: number; burst: number } | undefined;
  maxConnectionsPerPool: number;
  maxStatementMillis: number;
}): QuotaDefaults {
  const { rateLimit, maxConnectionsPerPool, maxStatementMillis } = settings;
  return {
    platform: rateLimit === undefined ? {} : { callsPerSecond: rateLimit.perSecond, burst: rateLimit.burst },
    tenant: { maxConnections: maxConnectionsPerPool, maxStatementMillis },
  };
}

/** What a call over a limit is told to wait before it tries again, when no token bucket says better. */
const CONCURRENCY_RETRY_MILLIS = 50;

/** Beyond this many databases' meters, those with nothing to remember are forgotten. */
const MAX_IDLE_METERS = 10_000;

/** One scope's limits and where it stands against them: statements in flight, and a token bucket when it has a rate. */
class Meter {
  inFlight = 0;
  /** With REDIS_URL: the other gateways' statements in flight in this scope, as of their last heartbeat (see `SharedConcurrency`). */
  others = 0;
  tokens = 0;
  at = 0;
  /** After a `take` that took fewer than wanted: milliseconds until the next token. */
  waitMillis = 0;
  limits: QuotaLimits = {};
  /** A database's meter: its platform's (kept for as long as the gateway runs). */
  platformMeter: Meter | undefined;
  /** With a rate and REDIS_URL: the bucket all gateways share, used while Redis answers (else this process's own). */
  shared: SharedTokens | undefined;

  constructor(
    readonly platform: string,
    /** Undefined for a platform's meter. */
    readonly tenantId: string | undefined,
    private readonly sharedLimits: SharedRateLimits | undefined,
  ) {}

  /**
   * Sets new limits, if they differ: a bucket starts full, and one whose rate
   * changes keeps its level (refilled up to now at the old rate, within the
   * new burst).
   */
  setLimits(limits: QuotaLimits): void {
    if (sameLimits(limits, this.limits)) return;
    const hadRate = this.limits.callsPerSecond !== undefined;
    if (hadRate) this.#refill(performance.now());
    this.limits = limits;
    const burst = this.#burst();
    this.tokens = hadRate ? Math.min(this.tokens, burst) : burst;
    this.at = performance.now();
    const rate = limits.callsPerSecond;
    this.shared = this.sharedLimits === undefined || rate === undefined || rate <= 0 ? undefined : this.sharedLimits.bucket(this.sharedName, rate, burst);
  }

  /** Its name in what gateways share: `platform:{platform}` or `database:{platform}:{tenant id}`. */
  get sharedName(): string {
    return this.tenantId === undefined ? `platform:${this.platform}` : `database:${this.platform}:${this.tenantId}`;
  }

  /** A rate of 0 has no burst either: it refuses every call. */
  #burst(): number {
    const rate = this.limits.callsPerSecond;
    if (rate === 0) return 0;
    return this.limits.burst ?? Math.max(1, Math.ceil(rate ?? 1));
  }

  #refill(now: number): void {
    this.tokens = Math.min(this.#burst(), this.tokens + ((now - this.at) / 1000) * (this.limits.callsPerSecond ?? 0));
    this.at = now;
  }

  /** Whether it has nothing that forgetting it would lose: nothing in flight, and its bucket (if any) full. */
  get idle(): boolean {
    if (this.inFlight > 0) return false;
    const rate = this.limits.callsPerSecond;
    return rate === undefined || this.tokens + ((performance.now() - this.at) / 1000) * rate >= this.#burst();
  }

  /** Takes up to `wanted` tokens, and says how many it took; `waitMillis` is then how long until the next one is there. */
  take(wanted: number): number {
    const rate = this.limits.callsPerSecond;
    if (rate === undefined) return wanted;
    const shared = this.shared;
    if (shared !== undefined && this.sharedLimits!.available) {
      const took = shared.take(wanted);
      this.waitMillis = shared.waitMillis;
      return took;
    }
    this.#refill(performance.now());
    const took = Math.min(wanted, Math.floor(this.tokens));
    this.tokens -= took;
    this.waitMillis = rate > 0 ? ((1 - this.tokens) / rate) * 1000 : Infinity;
    return took;
  }

  /** Its scope, as errors and metrics name it. */
  get scope(): "platform" | "tenant" {
    return this.tenantId === undefined ? "platform" : "tenant";
  }

  describe(): string {
    return this.tenantId === undefined ? `platform "${this.platform}"` : `tenant "${this.tenantId}" of platform "${this.platform}"`;
  }
}

/**
 * The quotas the gateway applies. Each platform has limits for its calls
 * together, and each of its databases limits of its own, each limit resolved
 * on its own:
 * - a platform's: its "platform" quota, else the settings' platform defaults;
 * - a database's: its "tenant" quota, else its platform's "each-tenant"
 *   quota, else the settings' tenant defaults.
 * Calls per second are taken at two points: a platform's as each call (and
 * QueryStream message) is authorized (`chargePlatform`), a database's as a
 * call reaches it (`admit`), where concurrent statements are counted too.
 * Connections and statement time are read by the pools and the services.
 */
export class Quotas {
  readonly #stored = new Map<string, StoredQuota>();
  readonly #platforms = new Map<string, Meter>();
  readonly #databases = new Map<string, Meter>();
  #generation = 0;
  /** The other gateways' statements in flight as last heard (see `setOthersInFlight`), for meters made in between. */
  #others: ReadonlyMap<string, number> = new Map();

  constructor(
    readonly defaults: QuotaDefaults,
    /** Told of every call refused for a limit, for the metrics. */
    private readonly onRefused?: (platform: string, limit: string, scope: "platform" | "tenant", statements: number) => void,
    /**
     * REDIS_URL: the rates (calls per second and burst) are buckets shared by
     * every gateway using that Redis, while it answers; this process's own
     * buckets otherwise. The other gateways' concurrent statements are told
     * through `setOthersInFlight`.
     */
    private readonly shared?: SharedRateLimits,
  ) {}

  /** Replaces the stored quotas with the catalog's; true when anything changed. */
  replace(quotas: readonly StoredQuota[]): boolean {
    const next = new Map(quotas.map((q) => [keyOf(q), q]));
    let changed = next.size !== this.#stored.size;
    for (const [key, q] of next) {
      const was = this.#stored.get(key);
      if (!changed && (was === undefined || !sameLimits(was.limits, q.limits))) changed = true;
    }
    if (!changed) return false;
    this.#stored.clear();
    for (const [key, q] of next) this.#stored.set(key, q);
    this.#recompute();
    return true;
  }

  /** Counts the quotas applied by `put`: a read of the catalog begun before one is older than what it applied. */
  get generation(): number {
    return this.#generation;
  }

  /** Applies one quota just stored (limits with nothing set: removed). */
  put(quota: StoredQuota): void {
    this.#generation++;
    if (QUOTA_LIMITS.some((k) => quota.limits[k] !== undefined)) this.#stored.set(keyOf(quota), quota);
    else this.#stored.delete(keyOf(quota));
    this.#recompute();
  }

  /** The quota stored for a scope, if any. */
  stored(scope: Pick<StoredQuota, "platform" | "scope" | "tenantId">): StoredQuota | undefined {
    return this.#stored.get(keyOf(scope));
  }

  /** The stored quotas of a platform (every one when undefined), sorted by platform, scope and tenant. */
  list(platforms?: ReadonlySet<string>): StoredQuota[] {
    const order: Record<QuotaScope, number> = { platform: 0, "each-tenant": 1, tenant: 2 };
    return [...this.#stored.values()]
      .filter((q) => platforms === undefined || platforms.has(q.platform))
      .sort((a, b) => cmp(a.platform, b.platform) || order[a.scope] - order[b.scope] || cmp(a.tenantId, b.tenantId));
  }

  /** The limits that apply to a platform's calls together. */
  platformLimits(platform: string): QuotaLimits {
    return inherit(this.#stored.get(keyOf({ platform, scope: "platform", tenantId: "" }))?.limits, this.defaults.platform);
  }

  /** The limits that apply to one database of a platform. */
  tenantLimits(platform: string, tenantId: string): QuotaLimits {
    const own = this.#stored.get(keyOf({ platform, scope: "tenant", tenantId }))?.limits;
    const each = this.#stored.get(keyOf({ platform, scope: "each-tenant", tenantId: "" }))?.limits;
    return inherit(own, inherit(each, this.defaults.tenant));
  }

  /** Takes a token of the platform's rate for a call (or a QueryStream message), or throws RATE_LIMITED. */
  chargePlatform(platform: string): void {
    const meter = this.#platformMeter(platform);
    if (meter.take(1) === 0) throw this.#refuse(meter, "calls_per_second", meter.waitMillis, 1);
  }

  /**
   * Admits a call to a database: within the database's rate, and within the
   * platform's and the database's concurrent statements, or it throws
   * RATE_LIMITED or QUOTA_EXCEEDED. Returns what to call once the call is over.
   */
  admit(database: string): () => void {
    const admission = this.admitSome(database, 1);
    if (admission.granted === 0) throw admission.refusal!;
    return admission.leave;
  }

  /**
   * Admits as many of `wanted` statements to a database (queries a QueryMany
   * call or a QueryStream message sends it together) as its quotas allow
   * now; `refusal` is the error of the others. `leave` once all admitted are over.
   */
  admitSome(database: string, wanted: number): { granted: number; refusal: GatewayError | undefined; leave: () => void } {
    const meter = this.#databaseMeter(database);
    if (meter === undefined) return { granted: wanted, refusal: undefined, leave: noop }; // not a tenant database: no quota names it
    const platform = meter.platformMeter!;
    let room = wanted;
    let full: Meter | undefined;
    const platformMax = platform.limits.maxConcurrentStatements;
    const platformFree = platformMax === undefined ? Infinity : platformMax - platform.inFlight - platform.others;
    if (platformFree < room) [room, full] = [Math.max(0, platformFree), platform];
    const ownMax = meter.limits.maxConcurrentStatements;
    const ownFree = ownMax === undefined ? Infinity : ownMax - meter.inFlight - meter.others;
    if (ownFree < room) [room, full] = [Math.max(0, ownFree), meter];
    const took = room > 0 ? meter.take(room) : 0;
    let refusal: GatewayError | undefined;
    if (took < wanted) {
      refusal =
        took < room || full === undefined
          ? this.#refuse(meter, "calls_per_second", meter.waitMillis, wanted - took)
          : this.#refuse(full, "max_concurrent_statements", CONCURRENCY_RETRY_MILLIS, wanted - took);
    }
    if (took === 0) return { granted: 0, refusal, leave: noop };
    platform.inFlight += took;
    meter.inFlight += took;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      platform.inFlight -= took;
      meter.inFlight -= took;
    };
    return { granted: took, refusal, leave };
  }

  /** The longest a statement of the database may run: its limit, its platform's, and `ceiling` (the gateway's), the least of them. */
  statementMillis(database: string, ceiling: number): number {
    // Read from the meters, whose limits are resolved already: this runs for every call.
    const meter = this.#databaseMeter(database);
    if (meter === undefined) return ceiling;
    return Math.min(ceiling, meter.limits.maxStatementMillis ?? Infinity, meter.platformMeter!.limits.maxStatementMillis ?? Infinity);
  }

  /** The database's share of the connection cap (see `PoolManagerOptions.shareOf`). */
  shareOf(database: string): { maxConnections: number; group?: { name: string; maxConnections: number } } {
    const parsed = parseDatabaseName(database);
    if (parsed === undefined) return { maxConnections: Infinity };
    const groupMax = this.platformLimits(parsed.platform).maxConnections;
    return {
      maxConnections: this.tenantLimits(parsed.platform, parsed.tenantId).maxConnections ?? Infinity,
      ...(groupMax === undefined ? {} : { group: { name: parsed.platform, maxConnections: groupMax } }),
    };
  }

  /** This gateway's statements in flight in each scope with a concurrency limit, by shared name (for `SharedConcurrency`). */
  *ownInFlight(): Iterable<[string, number]> {
    for (const meters of [this.#platforms, this.#databases]) {
      for (const meter of meters.values())
        if (meter.limits.maxConcurrentStatements !== undefined && meter.inFlight > 0) yield [meter.sharedName, meter.inFlight];
    }
  }

  /** The other gateways' statements in flight, by shared name (absent: none); counted against the concurrency limits from now on. */
  setOthersInFlight(sums: ReadonlyMap<string, number>): void {
    this.#others = sums;
    for (const meters of [this.#platforms, this.#databases]) for (const meter of meters.values()) meter.others = sums.get(meter.sharedName) ?? 0;
  }

  /** Statements in flight per platform (those that have made calls), for the metrics. */
  inFlight(): Map<string, number> {
    return new Map([...this.#platforms].map(([platform, meter]) => [platform, meter.inFlight]));
  }

  #platformMeter(platform: string): Meter {
    let meter = this.#platforms.get(platform);
    if (meter === undefined) {
      meter = new Meter(platform, undefined, this.shared);
      meter.setLimits(this.platformLimits(platform));
      meter.others = this.#others.get(meter.sharedName) ?? 0;
      this.#platforms.set(platform, meter);
    }
    return meter;
  }

  #databaseMeter(database: string): Meter | undefined {
    let meter = this.#databases.get(database);
    if (meter !== undefined) return meter;
    const parsed = parseDatabaseName(database);
    if (parsed === undefined) return undefined;
    if (this.#databases.size >= MAX_IDLE_METERS) for (const [name, m] of this.#databases) if (m.idle) this.#databases.delete(name);
    meter = new Meter(parsed.platform, parsed.tenantId, this.shared);
    meter.platformMeter = this.#platformMeter(parsed.platform);
    meter.setLimits(this.tenantLimits(parsed.platform, parsed.tenantId));
    meter.others = this.#others.get(meter.sharedName) ?? 0;
    this.#databases.set(database, meter);
    return meter;
  }

  #recompute(): void {
    for (const meter of this.#platforms.values()) meter.setLimits(this.platformLimits(meter.platform));
    for (const meter of this.#databases.values()) meter.setLimits(this.tenantLimits(meter.platform, meter.tenantId!));
  }

  #refuse(meter: Meter, limit: "calls_per_second" | "max_concurrent_statements", waitMillis: number, statements: number): GatewayError {
    this.onRefused?.(meter.platform, limit, meter.scope, statements);
    const waitNanos = BigInt(Math.ceil(Math.min(waitMillis, 3_600_000) * 1e6));
    const metadata: Record<string, string> = { platform: meter.platform, limit, scope: meter.scope };
    if (meter.tenantId !== undefined) metadata.tenant_id = meter.tenantId;
    const details = [
      {
        schema: RetryInfoSchema,
        message: create(RetryInfoSchema, { retryDelay: { seconds: waitNanos / 1_000_000_000n, nanos: Number(waitNanos % 1_000_000_000n) } }),
      },
    ];
    if (limit === "calls_per_second") {
      return new GatewayError("RATE_LIMITED", `${meter.describe()} is over its rate limit of ${meter.limits.callsPerSecond} calls per second`, {
        metadata,
        details,
      });
    }
    return new GatewayError(
      "QUOTA_EXCEEDED",
      `${meter.describe()} has ${meter.inFlight + meter.others} statements running or waiting, its limit (max_concurrent_statements): try again shortly`,
      { metadata, details },
    );
  }
}

function noop(): void {}

function sameLimits(a: QuotaLimits, b: QuotaLimits): boolean {
  return QUOTA_LIMITS.every((k) => a[k] === b[k]);
}

function keyOf(q: Pick<StoredQuota, "platform" | "scope" | "tenantId">): string {
  return `${q.platform}\0${q.scope}\0${q.tenantId}`;
}

/** `own`'s limits, and `from`'s where `own` has none. */
function inherit(own: QuotaLimits | undefined, from: QuotaLimits): QuotaLimits {
  if (own === undefined) return from;
  const out: QuotaLimits = { ...from };
  for (const k of QUOTA_LIMITS) if (own[k] !== undefined) out[k] = own[k];
  // A rate set here without a burst takes its own default burst, not the inherited rate's.
  if (own.callsPerSecond !== undefined && own.burst === undefined) delete out.burst;
  return out;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
