/**
 * `npm run bench`: the gateway side by side with what a platform would do
 * instead, in one run on one PostgreSQL:
 *
 *   (A) `pg` directly (a pg.Pool per database),
 *   (B) `pg` through PgBouncer in transaction mode (Debian's pgbouncer, when installed),
 *   (C) the SDK through the gateway (its own process, real mTLS, default settings).
 *
 * Scenarios: point selects by primary key on a 100,000-row table (concurrency 1
 * and 64), a small write transaction (update + insert, concurrency 16), many
 * tenant databases with a random tenant per query (concurrency 64, peak
 * PostgreSQL connections of each setup; point selects, and half write
 * transactions half point selects), streaming 1,000,000 rows (rows per
 * second and peak memory), and a batch of 10 statements against 10 sequential
 * queries.
 *
 *   npm run bench -- [--duration 10] [--scenarios point,write,tenants,tenantwrites,stream,batch]
 *                    [--rows 100000] [--tenants 500] [--stream-rows 1000000] [--json bench.json]
 *
 * Runs against an embedded PostgreSQL (max_connections 300) unless PG_URL is
 * set (its user must be a superuser). Throughput is operations per second;
 * latencies are per operation; "vs A" is the throughput as a ratio of (A) in
 * the same scenario; gateway CPU is its process's user+system time per
 * operation, and RSS its peak while the scenario ran.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import pg from "pg";
import { dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { batch } from "./bench/batch.js";
import { compareWithDirect, measuring, printTable } from "./bench/measure.js";
import { point } from "./bench/point.js";
import type { Run } from "./bench/run.js";
import { Pools, startPgBouncer, urlFor } from "./bench/setups.js";
import { stream } from "./bench/stream.js";
import { tenantWrites } from "./bench/tenant-writes.js";
import { tenants } from "./bench/tenants.js";
import { write } from "./bench/write.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "10" },
    scenarios: { type: "string", default: "point,write,tenants,tenantwrites,stream,batch" },
    rows: { type: "string", default: "100000" },
    tenants: { type: "string", default: "500" },
    "stream-rows": { type: "string", default: "1000000" },
    json: { type: "string" },
  },
});
const DURATION_MS = Number(args.duration) * 1000;
const SCENARIOS = new Set(args.scenarios!.split(","));
const ROWS = Number(args.rows);
const TENANTS = Number(args.tenants);
const STREAM_ROWS = Number(args["stream-rows"]);
const PLATFORM = `bench${randomBytes(3).toString("hex")}`;

// ---------------------------------------------------------------- setup
// Room for a connection per tenant database (the tenants scenario's second gateway) and more.
const postgres = await postgresForRun("db-gateway-bench-", { maxConnections: Math.max(300, TENANTS + 200) });
const { work, url: databaseUrl } = postgres;
const admin = new pg.Client({ connectionString: databaseUrl });
await admin.connect();
// Shared by the tenants scenario's second gateway, which must log in as the same tenant roles.
const GATEWAY_SECRET = randomBytes(32).toString("hex");
const gateway = await startGatewayProcess({ databaseUrl, platform: PLATFORM, env: { GATEWAY_SECRET } });
const { results, measure, measureStream } = measuring({ durationMs: DURATION_MS, streamRows: STREAM_ROWS, admin, platform: PLATFORM });
let bouncer: Awaited<ReturnType<typeof startPgBouncer>>;
const pools = new Pools();
try {
  const sdk = gateway.client().platform(PLATFORM);
  const adminSdk = gateway.adminClient().admin();
  await adminSdk.createTenant(PLATFORM, "");
  await sdk.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await sdk.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
  await sdk.query("CREATE TABLE history (id bigserial PRIMARY KEY, item int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now())");
  await sdk.query("ANALYZE items");
  bouncer = await startPgBouncer(work, databaseUrl);
  if (bouncer === undefined) console.log("PgBouncer: not installed (apt-get install pgbouncer): setup (B) is left out");
  const run: Run = {
    rows: ROWS,
    tenants: TENANTS,
    streamRows: STREAM_ROWS,
    platform: PLATFORM,
    mainDb: `${PLATFORM}_main`,
    databaseUrl,
    admin,
    gateway,
    gatewaySecret: GATEWAY_SECRET,
    adminSdk,
    sdk,
    bouncer,
    urlFor: (database, port) => urlFor(databaseUrl, database, port),
    direct: (database, max, keepIdle) => pools.open(urlFor(databaseUrl, database), max, keepIdle),
    bounced: (database, max) => pools.open(urlFor(databaseUrl, database, bouncer!.port), max),
    closePools: () => pools.close(),
    randomId: () => 1 + Math.floor(Math.random() * ROWS),
    measure,
    measureStream,
  };

  if (SCENARIOS.has("point")) await point(run);
  if (SCENARIOS.has("write")) await write(run);
  if (SCENARIOS.has("stream")) await stream(run);
  if (SCENARIOS.has("batch")) await batch(run);
  // Last: direct pg and PgBouncer are expected to exhaust PostgreSQL's connections in the many-tenant scenarios.
  if (SCENARIOS.has("tenants")) await tenants(run);
  if (SCENARIOS.has("tenantwrites")) await tenantWrites(run);

  compareWithDirect(results);
  printTable(results, `${args.duration} s per measurement; ${ROWS.toLocaleString("en")} rows; PostgreSQL ${postgres.embedded ? "embedded" : "PG_URL"}`);
  if (args.json) {
    await writeFile(
      args.json,
      JSON.stringify(
        {
          durationSeconds: DURATION_MS / 1000,
          rows: ROWS,
          tenants: TENANTS,
          streamRows: STREAM_ROWS,
          postgres: postgres.embedded ? "embedded" : "PG_URL",
          pgbouncer: bouncer !== undefined,
          results,
        },
        null,
        2,
      ) + "\n",
    );
  }
} finally {
  await pools.close();
  bouncer?.process.kill("SIGTERM");
  await gateway.close();
  await dropPlatformDatabases([PLATFORM], databaseUrl);
  await admin.end();
  await postgres.close();
}
