/**
 * `npm run bench:tenants`: many tenant databases behind one gateway at its
 * default settings, under a random read/write workload. Reports throughput,
 * latency percentiles, errors by reason, the gateway's peak PostgreSQL
 * connections (sampled from pg_stat_activity) and its memory.
 *
 *   npm run bench:tenants -- --tenants 1000 --duration 30 --concurrency 64 [--env MAX_POOLS=200]
 *
 * Runs against an embedded PostgreSQL (max_connections 300) unless PG_URL is
 * set; the gateway runs as its own process, started with `npm start`'s entry
 * point and real mTLS (test/helpers/gateway-process.ts), so its memory is its own.
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import pg from "pg";
import { GatewayError } from "../client-sdk/src/index.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";

const { values: args } = parseArgs({
  options: {
    tenants: { type: "string", default: "1000" },
    duration: { type: "string", default: "30" },
    concurrency: { type: "string", default: "64" },
    json: { type: "string" },
    env: { type: "string", multiple: true, default: [] },
  },
});
const TENANTS = Number(args.tenants);
const DURATION_MS = Number(args.duration) * 1000;
const CONCURRENCY = Number(args.concurrency);
const PLATFORM = "bench";
const ROWS = 100;

const postgres = await postgresForRun("db-gateway-bench-");
const databaseUrl = postgres.url;

// --env MAX_POOLS=200 and the like: gateway settings other than the defaults.
const gateway = await startGatewayProcess({
  databaseUrl,
  platform: PLATFORM,
  env: Object.fromEntries((args.env ?? []).map((kv) => kv.split(/=(.*)/s).slice(0, 2))),
});
const client = gateway.client();
const admin = gateway.adminClient().admin();
const direct = new pg.Client({ connectionString: databaseUrl });
await direct.connect();

try {
  // A template with a small table, then every tenant as a copy of it.
  await admin.createTenant(PLATFORM, "");
  await admin.createTenant(PLATFORM, "template");
  const template = client.platform(PLATFORM).tenant("template");
  await template.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)");
  await template.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
  const tenants = Array.from({ length: TENANTS }, (_, i) => `t${String(i).padStart(5, "0")}`);
  const creating = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < tenants.length) await admin.createTenant(PLATFORM, tenants[next++]!, { template: `${PLATFORM}_template` });
    }),
  );
  const createSeconds = (Date.now() - creating) / 1000;
  console.log(`created ${TENANTS} tenant databases in ${createSeconds.toFixed(1)} s`);

  let peakConnections = 0;
  let peakRssKb = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await direct.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway'");
      peakConnections = Math.max(peakConnections, rows[0]!.n);
      peakRssKb = Math.max(peakRssKb, (await gateway.rssBytes()) / 1024);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const cpuBefore = await gateway.cpuMicros();
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  const started = Date.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() - started < DURATION_MS) {
        const tenant = client.platform(PLATFORM).tenant(tenants[Math.floor(Math.random() * TENANTS)]!);
        const id = 1 + Math.floor(Math.random() * ROWS);
        const t0 = process.hrtime.bigint();
        try {
          if (Math.random() < 0.8) await tenant.query("SELECT id, qty, note FROM items WHERE id = $1", [id]);
          else await tenant.query("UPDATE items SET qty = qty + 1 WHERE id = $1", [id]);
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        } catch (err) {
          const reason = GatewayError.from(err).reason;
          errors.set(reason, (errors.get(reason) ?? 0) + 1);
        }
      }
    }),
  );
  const elapsed = (Date.now() - started) / 1000;
  const cpuSeconds = ((await gateway.cpuMicros()) - cpuBefore) / 1e6;
  sampling = false;
  await sampler;
  const stats = await admin.getPoolStats();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  const result = {
    tenants: TENANTS,
    concurrency: CONCURRENCY,
    durationSeconds: elapsed,
    calls: latencies.length,
    throughputPerSecond: Math.round(latencies.length / elapsed),
    latencyMs: { p50: round(pct(50)), p90: round(pct(90)), p99: round(pct(99)), max: round(latencies.at(-1) ?? NaN) },
    errors: Object.fromEntries(errors),
    peakGatewayConnections: peakConnections,
    maxTotalConnections: stats.totals?.maxTotalConnections,
    gatewayPeakRssMb: Math.round(peakRssKb / 1024),
    gatewayCpuMicrosPerCall: Math.round((cpuSeconds * 1e6) / Math.max(1, latencies.length)),
    settings: args.env,
    poolHitRate: round(Number(stats.totals!.hits) / Math.max(1, Number(stats.totals!.hits) + Number(stats.totals!.misses))),
    connectionsOpened: Number(stats.totals!.connectionsOpened),
    tenantCreateSeconds: createSeconds,
    postgres: postgres.embedded ? "embedded (max_connections 300)" : "PG_URL",
  };
  console.log(JSON.stringify(result, null, 2));
  if (args.json) await writeFile(args.json, JSON.stringify(result, null, 2) + "\n");
} finally {
  await gateway.close();
  if (!postgres.embedded) {
    // A shared server: remove what the benchmark made.
    const { rows } = await direct.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, 'bench_')");
    for (const { datname } of rows) await direct.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
    const roles = await direct.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'bench_')");
    for (const { rolname } of roles.rows) await direct.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(rolname)}`);
    await direct.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(`catalog_${PLATFORM}`)} WITH (FORCE)`);
    await direct.query("DROP ROLE IF EXISTS dbgateway_owner").catch(() => undefined);
  }
  await direct.end();
  await postgres.close();
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
