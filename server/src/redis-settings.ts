// The Redis that gateway instances share (REDIS_URL, its key prefix and command timeout) and the result cache kept there (RESULT_CACHE).

/** How the gateway reaches the shared Redis, and what it keeps there besides limits and nonces. */
export interface RedisSettings {
  readonly url: string;
  readonly keyPrefix: string;
  readonly commandTimeoutMillis: number;
  /** RESULT_CACHE=on: results of the queries that ask (cache_ttl_ms), kept at most this long and this large; undefined: off. */
  readonly resultCache: { readonly maxTtlMillis: number; readonly maxBytes: number } | undefined;
}

type SecretReader = (name: string) => string | undefined;
type IntReader = (name: string, fallback: number, min: number, max: number) => number;

/**
 * REDIS_URL (or _FILE: it may carry a password), REDIS_KEY_PREFIX (default
 * "dbgateway:"), REDIS_TIMEOUT_MS (250); RESULT_CACHE (off, or on, which
 * needs REDIS_URL) with RESULT_CACHE_MAX_TTL_MS (60,000) and
 * RESULT_CACHE_MAX_BYTES (1 MiB). Undefined without REDIS_URL.
 */
export function redisOf(env: NodeJS.ProcessEnv, secret: SecretReader, int: IntReader, problems: string[]): RedisSettings | undefined {
  const url = secret("REDIS_URL");
  if (url !== undefined) {
    let protocol: string | undefined;
    try {
      protocol = new URL(url).protocol;
    } catch {
      problems.push("REDIS_URL is not a valid URL");
    }
    if (protocol !== undefined && protocol !== "redis:" && protocol !== "rediss:") problems.push("REDIS_URL must be a redis:// or rediss:// URL");
  }
  const keyPrefix = env.REDIS_KEY_PREFIX ?? "dbgateway:";
  if (!/^[A-Za-z0-9_:.-]{1,64}$/.test(keyPrefix)) problems.push("REDIS_KEY_PREFIX must be 1 to 64 letters, digits, _ : . or -");
  const commandTimeoutMillis = int("REDIS_TIMEOUT_MS", 250, 10, 10_000);
  const cache = (env.RESULT_CACHE || "off").toLowerCase();
  if (cache !== "on" && cache !== "off") problems.push(`RESULT_CACHE must be on or off (got "${env.RESULT_CACHE}")`);
  if (cache === "on" && url === undefined) problems.push("RESULT_CACHE=on needs REDIS_URL: the cache is kept in Redis");
  const maxTtlMillis = int("RESULT_CACHE_MAX_TTL_MS", 60_000, 1, 86_400_000);
  const maxBytes = int("RESULT_CACHE_MAX_BYTES", 1_048_576, 1, 512 * 1_048_576);
  if (url === undefined) return undefined;
  return { url, keyPrefix, commandTimeoutMillis, resultCache: cache === "on" ? { maxTtlMillis, maxBytes } : undefined };
}
