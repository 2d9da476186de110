/**
 * What REDIS_URL costs a call end to end: `SELECT 1` as Query calls (concurrency 1) through
 * gateway processes with a platform rate set, without and with REDIS_URL, unsigned and signed
 * (SIGNING_SECRET_<PLATFORM>: a signed call waits for its nonce's claim in Redis), in alternating
 * 1.5 s windows after a warm-up round. Prints each one's median and 99th percentile.
 *
 *   [PG_URL=…] [ROUNDS=5] npx tsx scripts/shared-limits-latency.ts
 */
import { randomBytes } from "node:crypto";
import { createClient } from "../client-sdk/src/index.js";
import { startGatewayProcess, type GatewayProcess } from "../test/helpers/gateway-process.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startOwnRedis } from "../test/helpers/own-redis.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";

const rounds = Number(process.env.ROUNDS ?? 5);
const WINDOW_MILLIS = 1_500;

const postgres = await postgresForRun("shared-limits-latency-");
const redis = await startOwnRedis();
const gateways: GatewayProcess[] = [];
try {
  const secret = randomBytes(32).toString("base64url");
  // A rate no run reaches: every call takes a token, none is refused.
  const rate = { RATE_LIMIT_PER_SEC: "1000000" };
  const start = async (name: string, options: { redis: boolean; signed: boolean }) => {
    const platform = `p${randomBytes(5).toString("hex")}`;
    const env: Record<string, string> = { ...rate };
    if (options.redis) env.REDIS_URL = redis.url;
    if (options.signed) env[`SIGNING_SECRET_${platform.toUpperCase()}`] = secret;
    const gw = await startGatewayProcess({ databaseUrl: postgres.url, platform, env });
    gateways.push(gw);
    await gw.adminClient().admin().createTenant(gw.platform, "");
    const client = createClient({ ...gw.clientOptions(gw.platformKey), coalesce: false, ...(options.signed ? { signingSecret: secret } : {}) });
    const db = client.platform(gw.platform);
    return [name, () => db.query("SELECT 1")] as const;
  };
  const setups = Object.fromEntries([
    await start("per process, unsigned", { redis: false, signed: false }),
    await start("REDIS_URL, unsigned (rates shared)", { redis: true, signed: false }),
    await start("per process, signed", { redis: false, signed: true }),
    await start("REDIS_URL, signed (rates and nonces shared)", { redis: true, signed: true }),
  ]);
  const latencies: Record<string, number[]> = {};
  for (let round = 0; round <= rounds; round++) {
    for (const [name, call] of Object.entries(setups)) {
      const until = performance.now() + WINDOW_MILLIS;
      while (performance.now() < until) {
        const started = performance.now();
        await call();
        if (round > 0) (latencies[name] ??= []).push(performance.now() - started);
      }
    }
  }
  for (const [name, values] of Object.entries(latencies)) {
    values.sort((a, b) => a - b);
    const at = (q: number) => values[Math.min(values.length - 1, Math.floor(values.length * q))]!.toFixed(3);
    console.log(`${name.padEnd(46)} median ${at(0.5)} ms, p99 ${at(0.99)} ms (${values.length} calls)`);
  }
} finally {
  for (const gw of gateways) await gw.close();
  await dropPlatformDatabases(
    gateways.map((g) => g.platform),
    postgres.url,
  );
  if (!postgres.embedded) await dropOwnerRole(postgres.url);
  await redis.stop();
  await postgres.close();
}
