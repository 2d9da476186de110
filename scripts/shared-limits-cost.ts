// What sharing through Redis (REDIS_URL) costs: a call's rates from shared buckets against this process's own, the statements-in-flight heartbeat, a signed request's nonce claim.
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { SharedConcurrency } from "../server/src/coordination/shared-concurrency.js";
import { SharedNonces } from "../server/src/coordination/shared-nonces.js";
import { SharedRateLimits } from "../server/src/coordination/shared-rate-limits.js";
import { SharedRedis } from "../server/src/coordination/shared-redis.js";
import { createLogger } from "../server/src/telemetry/logger.js";
import { Quotas } from "../server/src/tenancy/quotas.js";
import { startOwnRedis } from "../test/helpers/own-redis.js";

/** Calls between two turns of the event loop: about what a loaded gateway runs in one (Redis replies arrive only between turns). */
const CALLS_PER_TURN = 100;
const RUNS = 1_000_000;

const databases = Array.from({ length: 500 }, (_, i) => `p_t${i}`);
/** Nanoseconds per call, the turns of the event loop included, and the calls refused (a shared bucket's batch not back in time). */
async function perCall(quotas: Quotas): Promise<{ nanos: number; refused: number }> {
  let refused = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < RUNS; i++) {
    const database = databases[i % databases.length]!;
    try {
      quotas.chargePlatform("p");
      quotas.statementMillis(database, 300_000);
      quotas.admit(database)();
    } catch {
      refused++;
    }
    if (i % CALLS_PER_TURN === 0) await yieldToLoop();
  }
  return { nanos: Number(process.hrtime.bigint() - started) / RUNS, refused };
}

const quotasWith = (shared?: SharedRateLimits): Quotas => {
  const quotas = new Quotas({ platform: {}, tenant: {} }, undefined, shared);
  // A rate no run reaches: what is measured is the bookkeeping, never a refusal.
  const limits = { callsPerSecond: 1e7, burst: 1e7, maxConcurrentStatements: 1_000, maxStatementMillis: 60_000 };
  for (const scope of ["platform", "each-tenant"] as const) quotas.put({ platform: "p", scope, tenantId: "", limits, updatedAt: new Date() });
  return quotas;
};

const server = await startOwnRedis();
const redis = new SharedRedis({ url: server.url, keyPrefix: "bench:", log: createLogger("silent") });
try {
  if (!(await redis.ready(2_000))) throw new Error("Redis did not answer");
  const shared = new SharedRateLimits(redis);
  for (let round = 0; round < 3; round++) {
    const own = await perCall(quotasWith());
    const viaRedis = await perCall(quotasWith(shared));
    console.log(
      `500 tenants, every limit set: ${own.nanos.toFixed(0)} ns a call per process, ${viaRedis.nanos.toFixed(0)} ns shared through Redis ` +
        `(${viaRedis.refused} of ${RUNS} refused waiting for a batch)`,
    );
  }
  // The statements-in-flight heartbeat, every 250 ms off the calls' path: databases with a limit, each with a statement in flight.
  for (const inFlight of [200, 10_000]) {
    const many = new Quotas({ platform: {}, tenant: {} });
    many.put({ platform: "p", scope: "each-tenant", tenantId: "", limits: { maxConcurrentStatements: 10 }, updatedAt: new Date() });
    const leaves = Array.from({ length: inFlight }, (_, i) => many.admit(`p_h${i}`));
    const concurrency = new SharedConcurrency(
      redis,
      () => many.ownInFlight(),
      (others) => many.setOthersInFlight(others),
    );
    const beats = 20;
    const started = process.hrtime.bigint();
    for (let i = 0; i < beats; i++) await concurrency.beat();
    console.log(
      `statements-in-flight heartbeat, ${inFlight} databases in flight: ${(Number(process.hrtime.bigint() - started) / beats / 1e6).toFixed(2)} ms a beat`,
    );
    await concurrency.stop();
    leaves.forEach((leave) => leave());
  }
  if (!redis.available) throw new Error("Redis was marked unreachable during the run: the numbers are not Redis's");
  const nonces = new SharedNonces(redis);
  for (let round = 0; round < 3; round++) {
    const claims = 20_000;
    const started = process.hrtime.bigint();
    for (let i = 0; i < claims; i++) await nonces.claim("p", `nonce-${round}-${i}-0123456789`, 60_000);
    console.log(
      `signed request's nonce claimed in Redis: ${(Number(process.hrtime.bigint() - started) / claims / 1000).toFixed(1)} µs a call, one after another`,
    );
  }
} finally {
  await redis.close();
  await server.stop();
}
