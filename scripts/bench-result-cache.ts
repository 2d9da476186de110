/**
 * The result cache's hit path against running the query: one caller, then 8,
 * each making Query calls (not coalesced) through a gateway process with
 * RESULT_CACHE=on and a redis-server of its own, for a point select and for
 * an aggregate over 20,000 rows, uncached and served from the cache; and what
 * the cache costs a write (the generation's increment before it is answered).
 * Rounds alternate so that noise falls on every case alike.
 *
 *   [SECONDS=4] [ROUNDS=3] npx tsx scripts/bench-result-cache.ts
 */
import { createClient } from "../client-sdk/src/index.js";
import { dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { startOwnRedis } from "../test/helpers/own-redis.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";

const SECONDS = Number(process.env.SECONDS ?? 4);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const ROWS = 20_000;

const postgres = await postgresForRun("db-gateway-bench-cache-");
const redis = await startOwnRedis();
const platform = `benchcache${process.pid}`;
const secrets = { platformKey: `key-${platform}-0123456789abcdef`, adminKey: "admin-0123456789abcdef0123", gatewaySecret: "c".repeat(64) };
const env = { REDIS_URL: redis.url, RESULT_CACHE: "on", RESULT_CACHE_MAX_BYTES: "65536" };
const cacheOn = await startGatewayProcess({ databaseUrl: postgres.url, platform, secrets, env });
const cacheOff = await startGatewayProcess({ databaseUrl: postgres.url, platform, secrets, env: { REDIS_URL: redis.url, GATEWAY_INSTANCES: "2" } });
try {
  await cacheOn.adminClient().admin().createTenant(platform, "shop");
  const on = createClient({ ...cacheOn.clientOptions(secrets.platformKey), coalesce: false })
    .platform(platform)
    .tenant("shop");
  const off = createClient({ ...cacheOff.clientOptions(secrets.platformKey), coalesce: false })
    .platform(platform)
    .tenant("shop");
  await on.query("CREATE TABLE item (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await on.query("INSERT INTO item SELECT g, g % 100, repeat('x', 40) FROM generate_series(1, $1::int) g", [ROWS]);
  await on.query("CREATE TABLE log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())");
  await on.query("ANALYZE item");
  const POINT = "SELECT qty, note FROM item WHERE id = $1";
  const AGGREGATE = "SELECT qty, count(*)::int AS n FROM item GROUP BY qty ORDER BY qty LIMIT 5";
  // Point selects over 100 ids, so that the cached case is all hits after the warm-up.
  const id = () => [1 + Math.floor(Math.random() * 100)];
  const cases: Record<string, () => Promise<unknown>> = {
    "point, PostgreSQL": () => on.query(POINT, id()),
    "point, cache hit": () => on.query(POINT, id(), { cacheTtlMs: 600_000 }),
    "aggregate, PostgreSQL": () => on.query(AGGREGATE),
    "aggregate, cache hit": () => on.query(AGGREGATE, [], { cacheTtlMs: 600_000 }),
    "insert, cache off": () => off.query("INSERT INTO log DEFAULT VALUES"),
    "insert, cache on": () => on.query("INSERT INTO log DEFAULT VALUES"),
  };
  const results = new Map<string, number[]>();
  const run = async (name: string, op: () => Promise<unknown>, callers: number, keep: boolean) => {
    const latencies: number[] = [];
    const until = performance.now() + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (performance.now() < until) {
          const started = performance.now();
          await op();
          latencies.push(performance.now() - started);
        }
      }),
    );
    if (keep) results.set(`${name} (c=${callers})`, [...(results.get(`${name} (c=${callers})`) ?? []), ...latencies]);
  };
  // Warm-up: the cached cases' entries are made, and no insert runs between the cached reads below
  // (each insert ends the tenant's cached results): the insert cases run last in each round.
  for (const [name, op] of Object.entries(cases)) await run(name, op, 8, false);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const callers of [1, 8]) {
      for (const [name, op] of Object.entries(cases)) {
        if (name.includes("cache hit")) await op(); // made again after the last round's inserts
        await run(name, op, callers, true);
      }
    }
  }
  console.log(`${ROUNDS} rounds of ${SECONDS} s per case, Query calls (not coalesced); ${ROWS} rows`);
  for (const [name, latencies] of results) {
    latencies.sort((x, y) => x - y);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(3);
    console.log(`${name.padEnd(30)} ${String(Math.round(latencies.length / (ROUNDS * SECONDS))).padStart(6)}/s  p50 ${at(0.5)} ms  p99 ${at(0.99)} ms`);
  }
} finally {
  await cacheOn.close();
  await cacheOff.close();
  await dropPlatformDatabases([platform], postgres.url);
  await redis.stop();
  await postgres.close();
}
