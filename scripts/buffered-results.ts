/**
 * Oversized buffered results against a gateway process: `CALLS` concurrent
 * Query calls, each of `ROWS` rows of about 110 bytes (100 MB at the default
 * 1,000,000), while the gateway's RSS and `/health/ready` are sampled every
 * 100 ms. Prints how the calls ended, the peak RSS, readiness samples that
 * failed, and the gateway's event-loop lag (`nodejs_eventloop_lag_max_seconds`
 * over the load) and major GC time. BASE runs another checkout's gateway
 * (before the limits, say), GW_ENV adds settings (JSON).
 *
 *   [PG_URL=…] [BASE=/path/to/checkout] [ROWS=1000000] [CALLS=6] [GW_ENV='{"MAX_RESULT_BYTES":"…"}'] npx tsx scripts/buffered-results.ts
 */
import { createClient, GatewayError } from "../client-sdk/src/index.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";

const url = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const rows = Number(process.env.ROWS ?? 1_000_000);
const calls = Number(process.env.CALLS ?? 6);
const gw = await startGatewayProcess({ databaseUrl: url, root: process.env.BASE, env: JSON.parse(process.env.GW_ENV ?? "{}") as Record<string, string> });
const metrics = async () => (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
try {
  await gw.adminClient().admin().createTenant(gw.platform, "");
  const client = createClient({ ...gw.clientOptions(gw.platformKey), coalesce: false });
  const db = client.platform(gw.platform);
  await db.query("SELECT 1");
  const idleRss = await gw.rssBytes();
  let peakRss = idleRss;
  let samples = 0;
  let notReady = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      samples++;
      peakRss = Math.max(peakRss, await gw.rssBytes());
      const ready = await fetch(`http://127.0.0.1:${gw.metricsPort}/health/ready`, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
      if (ready?.status !== 200) notReady++;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const before = await metrics(); // also restarts the event-loop lag's maximum
  const started = Date.now();
  const outcomes = await Promise.allSettled(
    Array.from({ length: calls }, () => db.query(`SELECT g, repeat('x', 90) AS pad FROM generate_series(1, ${rows}) g`, [], { rowMode: "array" })),
  );
  const seconds = (Date.now() - started) / 1000;
  sampling = false;
  await sampler;
  const after = await metrics();
  const ended: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.status === "fulfilled" ? `served (${o.value.rows.length} rows)` : GatewayError.from(o.reason).reason;
    ended[key] = (ended[key] ?? 0) + 1;
  }
  const majorGc = metric(after, 'nodejs_gc_duration_seconds_sum\\{kind="major"\\}') - metric(before, 'nodejs_gc_duration_seconds_sum\\{kind="major"\\}');
  console.log(`${calls} calls of ${rows} rows in ${seconds.toFixed(1)} s: ${JSON.stringify(ended)}`);
  console.log(`gateway RSS ${(idleRss / 1e6).toFixed(0)} MB idle, ${(peakRss / 1e6).toFixed(0)} MB peak`);
  console.log(`event-loop lag max ${metric(after, "nodejs_eventloop_lag_max_seconds").toFixed(3)} s, major GC ${majorGc.toFixed(2)} s`);
  console.log(`/health/ready not 200 in ${notReady} of ${samples} samples`);
  client.close();
} finally {
  await gw.close();
  await dropPlatformDatabases([gw.platform], url);
  await dropOwnerRole(url);
}
