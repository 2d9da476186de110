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
 * PostgreSQL connections of each setup), streaming 1,000,000 rows (rows per
 * second and peak memory), and a batch of 10 statements against 10 sequential
 * queries.
 *
 *   npm run bench -- [--duration 10] [--scenarios point,write,tenants,stream,batch]
 *                    [--rows 100000] [--tenants 500] [--stream-rows 1000000] [--json bench.json]
 *
 * Runs against an embedded PostgreSQL (max_connections 300) unless PG_URL is
 * set (its user must be a superuser). Throughput is operations per second;
 * latencies are per operation; "vs A" is the throughput as a ratio of (A) in
 * the same scenario; gateway CPU is its process's user+system time per
 * operation, and RSS its peak while the scenario ran.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import Cursor from "pg-cursor";
import { dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "../test/helpers/gateway-process.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { createClient } from "../client-sdk/src/index.js";
import { mapLimit } from "../test/helpers/wait.js";
import { connectionsOpened, startBareServer } from "./measuring.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "10" },
    scenarios: { type: "string", default: "point,write,tenants,stream,batch" },
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

interface Row {
  scenario: string;
  setup: string;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  vsDirect?: number;
  gatewayCpuMicrosPerOp?: number;
  gatewayPeakRssMb?: number;
  peakPgConnections?: number;
  errors: Record<string, number>;
  note?: string;
}
const results: Row[] = [];

// ---------------------------------------------------------------- setup
// Room for a connection per tenant database (the tenants scenario's second gateway) and more.
const postgres = await postgresForRun("db-gateway-bench-", { maxConnections: Math.max(300, TENANTS + 200) });
const { work, url: databaseUrl } = postgres;
const adminUrl = new URL(databaseUrl);
const urlFor = (database: string, port?: number) => {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  if (port !== undefined) {
    url.hostname = "127.0.0.1";
    url.port = String(port);
  }
  return url.toString();
};
const admin = new pg.Client({ connectionString: databaseUrl });
await admin.connect();
// Shared by the tenants scenario's second gateway, which must log in as the same tenant roles.
const GATEWAY_SECRET = randomBytes(32).toString("hex");
const gateway = await startGatewayProcess({ databaseUrl, platform: PLATFORM, env: { GATEWAY_SECRET } });
let bouncer: { port: number; process: ChildProcess } | undefined;
const pools: pg.Pool[] = [];
try {
  const sdkClient = gateway.client();
  const sdk = sdkClient.platform(PLATFORM);
  const uncoalescedClient = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: false });
  const uncoalesced = uncoalescedClient.platform(PLATFORM);
  const callsClient = createClient({ ...gateway.clientOptions(gateway.platformKey), queryStream: false });
  const byCalls = callsClient.platform(PLATFORM);
  const adminSdk = gateway.adminClient().admin();
  await adminSdk.createTenant(PLATFORM, "");
  await sdk.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await sdk.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
  await sdk.query("CREATE TABLE history (id bigserial PRIMARY KEY, item int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now())");
  await sdk.query("ANALYZE items");
  const mainDb = `${PLATFORM}_main`;
  bouncer = await startPgBouncer(work);
  if (bouncer === undefined) console.log("PgBouncer: not installed (apt-get install pgbouncer): setup (B) is left out");

  const direct = (database: string, max: number) => {
    const pool = new pg.Pool({ connectionString: urlFor(database), max });
    pool.on("error", () => undefined);
    pools.push(pool);
    return pool;
  };
  const bounced = (database: string, max: number) => {
    const pool = new pg.Pool({ connectionString: urlFor(database, bouncer!.port), max });
    pool.on("error", () => undefined);
    pools.push(pool);
    return pool;
  };
  const randomId = () => 1 + Math.floor(Math.random() * ROWS);
  const pointSql = "SELECT id, qty, note FROM items WHERE id = $1";

  // ------------------------------------------------------------ point selects
  if (SCENARIOS.has("point")) {
    for (const concurrency of [1, 64]) {
      const scenario = `point select, c=${concurrency}`;
      const a = direct(mainDb, concurrency);
      await measure(scenario, "A pg direct", concurrency, () => a.query(pointSql, [randomId()]));
      if (bouncer) {
        const b = bounced(mainDb, concurrency);
        await measure(scenario, "B pg via PgBouncer", concurrency, () => b.query(pointSql, [randomId()]));
      }
      // Without coalescing (one Query call per query), then coalesced into a QueryMany call per turn, then
      // as the SDK does by default: coalesced over a QueryStream.
      await measure(scenario, "C SDK via gateway, coalescing off", concurrency, () => uncoalesced.query(pointSql, [randomId()]), { gateway });
      if (concurrency > 1)
        await measure(scenario, "C SDK via gateway, QueryMany calls (queryStream: false)", concurrency, () => byCalls.query(pointSql, [randomId()]), {
          gateway,
        });
      await measure(scenario, "C SDK via gateway", concurrency, () => sdk.query(pointSql, [randomId()]), { gateway });
      if (concurrency === 1) {
        // What the gRPC hop alone costs (mTLS, HTTP/2, grpc-js and the gateway's interceptors, no database): the floor of (C)'s latency.
        const health = healthChecker(gateway);
        await measure(scenario, "C′ gRPC hop alone: grpc-js health Check on the gateway", concurrency, health.check, { gateway });
        health.close();
        // The least any gRPC server in front of PostgreSQL costs a lone query, sent as the SDK sends it:
        // the same statement and reset, with no authentication, routing, pool, deadline or telemetry.
        const bare = await startBareServer(urlFor(mainDb), "reset");
        try {
          const floorClient = createClient({ ...gateway.clientOptions(gateway.platformKey), url: `https://localhost:${bare.port}` });
          const floor = floorClient.platform(PLATFORM);
          await measure(
            scenario,
            "C″ floor: SDK over QueryStream to a bare grpc-js server running the statement and DISCARD ALL (scripts/bare-grpc-server.ts)",
            concurrency,
            () => floor.query(pointSql, [randomId()]),
          );
          floorClient.close();
        } finally {
          bare.close();
        }
      }
      await closePools();
    }
  }

  uncoalescedClient.close();
  callsClient.close();

  // ------------------------------------------------------------ write transaction
  if (SCENARIOS.has("write")) {
    const scenario = "write transaction, c=16";
    const update = "UPDATE items SET qty = qty + $1 WHERE id = $2";
    const insert = "INSERT INTO history (item, delta) VALUES ($2, $1)";
    const viaPool = (pool: pg.Pool) => async () => {
      const client = await pool.connect();
      try {
        const id = randomId();
        await client.query("BEGIN");
        await client.query(update, [1, id]);
        await client.query(insert, [1, id]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    };
    await measure(scenario, "A pg direct", 16, viaPool(direct(mainDb, 16)));
    if (bouncer) await measure(scenario, "B pg via PgBouncer", 16, viaPool(bounced(mainDb, 16)));
    await closePools();
    await measure(
      scenario,
      "C SDK via gateway (atomic batch)",
      16,
      () => {
        const id = randomId();
        return sdk.batch(
          [
            { sql: update, params: [1, id] },
            { sql: insert, params: [1, id] },
          ],
          { atomic: true },
        );
      },
      { gateway },
    );
    await measure(
      scenario,
      "C SDK via gateway (transaction())",
      16,
      () =>
        sdk.transaction(async (tx) => {
          const id = randomId();
          await tx.query(update, [1, id]);
          await tx.query(insert, [1, id]);
        }),
      { gateway },
    );
  }

  // ------------------------------------------------------------ streaming
  if (SCENARIOS.has("stream")) {
    const scenario = `stream ${STREAM_ROWS.toLocaleString("en")} rows`;
    const sql = "SELECT g AS n, md5(g::text) AS hash FROM generate_series(1, $1::int) g";
    const viaCursor = (url: string) => async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const cursor = client.query(new Cursor(sql, [STREAM_ROWS]));
        let n = 0;
        for (;;) {
          const rows = await cursor.read(1000);
          if (rows.length === 0) break;
          n += rows.length;
        }
        await cursor.close();
        return n;
      } finally {
        await client.end();
      }
    };
    await measureStream(scenario, "A pg-cursor direct", viaCursor(urlFor(mainDb)));
    if (bouncer) await measureStream(scenario, "B pg-cursor via PgBouncer", viaCursor(urlFor(mainDb, bouncer.port)));
    // As pg-cursor's read(1000) above: rows a message (1,000 by default) at a time.
    await measureStream(
      scenario,
      "C SDK stream().batches() via gateway",
      async () => {
        let n = 0;
        for await (const rows of sdk.stream(sql, [STREAM_ROWS]).batches()) n += rows.length;
        return n;
      },
      { gateway },
    );
    await measureStream(
      scenario,
      "C SDK stream() row by row via gateway",
      async () => {
        let n = 0;
        for await (const row of sdk.stream(sql, [STREAM_ROWS])) n += row ? 1 : 0;
        return n;
      },
      { gateway },
    );
  }

  // ------------------------------------------------------------ batch
  if (SCENARIOS.has("batch")) {
    const scenario = "10 point selects, c=16";
    const ten = () => Array.from({ length: 10 }, () => ({ sql: pointSql, params: [randomId()] }));
    const sequential = (pool: pg.Pool) => async () => {
      for (const s of ten()) await pool.query(s.sql, s.params);
    };
    await measure(scenario, "A pg direct, 10 sequential queries", 16, sequential(direct(mainDb, 16)));
    if (bouncer) await measure(scenario, "B pg via PgBouncer, 10 sequential queries", 16, sequential(bounced(mainDb, 16)));
    await closePools();
    await measure(
      scenario,
      "C SDK, 10 sequential queries",
      16,
      async () => {
        for (const s of ten()) await sdk.query(s.sql, s.params);
      },
      { gateway },
    );
    await measure(scenario, "C SDK, one batch of 10", 16, () => sdk.batch(ten()), { gateway });
  }

  // ------------------------------------------------------------ many tenants
  // Last: direct pg and PgBouncer are expected to exhaust PostgreSQL's connections here.
  if (SCENARIOS.has("tenants")) {
    const scenario = `${TENANTS} tenants, random tenant, c=64`;
    await adminSdk.createTenant(PLATFORM, "template");
    const template = sdkClient.platform(PLATFORM).tenant("template");
    await template.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
    await template.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 100) g");
    const tenants = Array.from({ length: TENANTS }, (_, i) => `t${String(i).padStart(5, "0")}`);
    const created = Date.now();
    await mapLimit(tenants, 4, (tenant) => adminSdk.createTenant(PLATFORM, tenant, { template: `${PLATFORM}_template` }));
    console.log(`created ${TENANTS} tenant databases in ${((Date.now() - created) / 1000).toFixed(1)} s`);
    const pick = () => tenants[Math.floor(Math.random() * TENANTS)]!;
    const tenantId = () => 1 + Math.floor(Math.random() * 100);
    const perTenant = (make: (database: string) => pg.Pool) => {
      const byTenant = new Map<string, pg.Pool>();
      return (tenant: string) => {
        let pool = byTenant.get(tenant);
        if (pool === undefined) byTenant.set(tenant, (pool = make(`${PLATFORM}_${tenant}`)));
        return pool.query(pointSql, [tenantId()]);
      };
    };
    /** Measures a setup after one query to every tenant (16 at a time), which opens its connections. */
    const measureTenants = async (setup: string, queryTenant: (tenant: string) => Promise<unknown>, gatewayProcess?: GatewayProcess) => {
      await mapLimit(tenants, 16, (tenant) => queryTenant(tenant).catch(() => undefined));
      await measure(scenario, setup, 64, () => queryTenant(pick()), { gateway: gatewayProcess, sampleConnections: true });
    };
    // Each setup starts with no connection to the tenant databases: those the previous one left
    // (PgBouncer's and the gateways' idle server connections) are closed first.
    const tenantConnections = `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname ~ '^${PLATFORM}_t[0-9]+$'`;
    const closeTenantConnections = async () => {
      await admin.query(`SELECT pg_terminate_backend(pid) FROM (${tenantConnections}) c`);
      while ((await admin.query(tenantConnections)).rowCount! > 0) await new Promise((r) => setTimeout(r, 50));
    };
    // What a platform would write without a gateway: a pool per tenant database (pg's default size, 10).
    await closeTenantConnections();
    await measureTenants(
      "A pg direct (a pool per tenant)",
      perTenant((d) => direct(d, 10)),
    );
    await closePools();
    // PostgreSQL's own ceiling for this workload: one connection per tenant database, all opened before
    // measuring, none refused, no reset between queries and no process between client and server.
    await closeTenantConnections();
    await measureTenants(
      "A′ pg direct (one connection per tenant)",
      perTenant((d) => direct(d, 1)),
    );
    await closePools();
    if (bouncer) {
      await closeTenantConnections();
      await measureTenants(
        "B pg via PgBouncer (a pool per tenant)",
        perTenant((d) => bounced(d, 10)),
      );
      await closePools();
    }
    // The gateway sized for this many tenants: a cap above their number and a pool for each, so
    // that every tenant database keeps a connection. The queries of a turn, whatever their
    // tenants, travel in one QueryMany call.
    const { rows: settings } = await admin.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'max_connections'");
    const sizedCap = TENANTS + 100;
    if (sizedCap + 50 <= Number(settings[0]!.setting)) {
      await closeTenantConnections();
      const env = { MAX_TOTAL_CONNECTIONS: String(sizedCap), MAX_POOLS: String(TENANTS + 10) };
      const sized = await startGatewayProcess({ databaseUrl, platform: PLATFORM, env: { ...env, GATEWAY_SECRET } });
      try {
        const sizing = `MAX_TOTAL_CONNECTIONS=${env.MAX_TOTAL_CONNECTIONS}, MAX_POOLS=${env.MAX_POOLS}`;
        const manySdk = createClient({ ...sized.clientOptions(sized.platformKey), queryStream: false });
        try {
          const db = manySdk.platform(PLATFORM);
          await measureTenants(
            `C SDK via gateway (${sizing}), QueryMany calls (queryStream: false)`,
            (tenant) => db.tenant(tenant).query(pointSql, [tenantId()]),
            sized,
          );
        } finally {
          manySdk.close();
        }
        const sizedSdk = sized.client().platform(PLATFORM);
        await measureTenants(`C SDK via gateway (${sizing})`, (tenant) => sizedSdk.tenant(tenant).query(pointSql, [tenantId()]), sized);
      } finally {
        await sized.close();
      }
    } else {
      console.log(`max_connections ${settings[0]!.setting}: too few for a gateway with a connection per tenant (${sizedCap}); that setup is left out`);
    }
    // The gateway as started for every scenario: default settings (a cap of 200 connections, 50 pools).
    await closeTenantConnections();
    await measureTenants("C SDK via gateway (defaults)", (tenant) => sdk.tenant(tenant).query(pointSql, [tenantId()]), gateway);
  }

  for (const row of results) {
    const a = results.find((r) => r.scenario === row.scenario && r.setup.startsWith("A "));
    row.vsDirect = a === undefined || a.opsPerSecond === 0 ? undefined : round(row.opsPerSecond / a.opsPerSecond, 2);
  }
  printTable();
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
  await closePools();
  bouncer?.process.kill("SIGTERM");
  await gateway.close();
  await dropPlatformDatabases([PLATFORM], databaseUrl);
  await admin.end();
  await postgres.close();
}

// ---------------------------------------------------------------- helpers

/** Runs `op` from `concurrency` workers for the scenario's duration and records one row. */
async function measure(
  scenario: string,
  setup: string,
  concurrency: number,
  op: () => Promise<unknown>,
  options: { gateway?: GatewayProcess; sampleConnections?: boolean } = {},
): Promise<void> {
  // Warm-up: connections opened, code compiled.
  const warm = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() - warm < Math.min(1_000, DURATION_MS / 4)) await op().catch(() => undefined);
    }),
  );
  const sampler = startSampler(options);
  const cpu = options.gateway ? await options.gateway.cpuMicros() : 0;
  const opened = options.gateway && options.sampleConnections ? await connectionsOpened(options.gateway) : 0;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() - started < DURATION_MS) {
        const t0 = performance.now();
        try {
          await op();
          latencies.push(performance.now() - t0);
        } catch (err) {
          const key = (err as { reason?: string; code?: string }).reason ?? (err as { code?: string }).code ?? (err as Error).message.slice(0, 40);
          errors[key] = (errors[key] ?? 0) + 1;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const gatewayCpu = options.gateway ? (await options.gateway.cpuMicros()) - cpu : 0;
  const peaks = await sampler.stop();
  record(scenario, setup, latencies, seconds, errors, options.gateway ? gatewayCpu : undefined, peaks);
  if (options.gateway && options.sampleConnections)
    results.at(-1)!.note = `${(await connectionsOpened(options.gateway)) - opened} connections opened while measured`;
}

/** A plain grpc-js client of the gateway's grpc.health.v1 Health/Check, over the same mTLS as the SDK. */
function healthChecker(gateway: GatewayProcess): { check: () => Promise<void>; close: () => void } {
  const { url, tls } = gateway.clientOptions(gateway.platformKey);
  const credentials = grpc.credentials.createSsl(Buffer.from(tls!.ca!), Buffer.from(tls!.key!), Buffer.from(tls!.cert!));
  const client = new grpc.Client(new URL(url).host, credentials);
  const bytes = (b: Buffer) => b;
  const empty = Buffer.alloc(0); // HealthCheckRequest { service: "" }
  return {
    check: () =>
      new Promise<void>((resolve, reject) => {
        client.makeUnaryRequest("/grpc.health.v1.Health/Check", bytes, bytes, empty, (err) => (err ? reject(err) : resolve()));
      }),
    close: () => client.close(),
  };
}

/**
 * Reads whole streams, one after another, until the scenario's duration has
 * passed (at least one), and records rows per second: one stream of a
 * million rows lasts a second or two, too short to rise above this
 * machine's noise.
 */
async function measureStream(scenario: string, setup: string, read: () => Promise<number>, options: { gateway?: GatewayProcess } = {}): Promise<void> {
  const sampler = startSampler({ gateway: options.gateway, clientRss: !options.gateway });
  const cpu = options.gateway ? await options.gateway.cpuMicros() : 0;
  const started = performance.now();
  let rows = 0;
  let streams = 0;
  do {
    const read1 = await read();
    if (read1 !== STREAM_ROWS) throw new Error(`${setup}: read ${read1} rows of ${STREAM_ROWS}`);
    rows += read1;
    streams++;
  } while (performance.now() - started < DURATION_MS);
  const seconds = (performance.now() - started) / 1000;
  const gatewayCpu = options.gateway ? (await options.gateway.cpuMicros()) - cpu : 0;
  const peaks = await sampler.stop();
  results.push({
    scenario,
    setup,
    opsPerSecond: Math.round(rows / seconds),
    p50Ms: NaN,
    p99Ms: NaN,
    gatewayCpuMicrosPerOp: options.gateway ? round(gatewayCpu / rows, 2) : undefined,
    gatewayPeakRssMb: peaks.rssMb,
    errors: {},
    note: `${streams} streams; ${options.gateway ? "gateway" : "bench process"} RSS ${peaks.rssStartMb} → peak ${peaks.rssMb} MB`,
  });
  console.log(`${scenario} | ${setup}: ${Math.round(rows / seconds)} rows/s`);
}

function record(
  scenario: string,
  setup: string,
  latencies: number[],
  seconds: number,
  errors: Record<string, number>,
  gatewayCpu: number | undefined,
  peaks: Peaks,
): void {
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  const opsPerSecond = latencies.length / seconds;
  const row: Row = {
    scenario,
    setup,
    opsPerSecond: Math.round(opsPerSecond),
    p50Ms: round(pct(50), 3),
    p99Ms: round(pct(99), 3),
    gatewayCpuMicrosPerOp: gatewayCpu === undefined ? undefined : Math.round(gatewayCpu / Math.max(1, latencies.length)),
    gatewayPeakRssMb: gatewayCpu === undefined ? undefined : peaks.rssMb,
    peakPgConnections: peaks.connections,
    errors,
  };
  results.push(row);
  console.log(
    `${scenario} | ${setup}: ${row.opsPerSecond} ops/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms${Object.keys(errors).length ? `, errors ${JSON.stringify(errors)}` : ""}`,
  );
}

interface Peaks {
  rssMb?: number;
  rssStartMb?: number;
  connections?: number;
}

/** Samples, every 50 ms, the gateway's RSS (or this process's) and PostgreSQL's connections to the tenant databases. */
function startSampler(options: { gateway?: GatewayProcess; clientRss?: boolean; sampleConnections?: boolean }): { stop(): Promise<Peaks> } {
  const peaks: Peaks = {};
  let running = true;
  const rss = async () =>
    options.gateway ? (await options.gateway.rssBytes()) / 1048576 : options.clientRss ? process.memoryUsage.rss() / 1048576 : undefined;
  const loop = (async () => {
    const start = await rss();
    peaks.rssStartMb = start === undefined ? undefined : Math.round(start);
    while (running) {
      const r = await rss();
      if (r !== undefined) peaks.rssMb = Math.max(peaks.rssMb ?? 0, Math.round(r));
      if (options.sampleConnections) {
        // Client connections to the tenant databases only: not the other gateway's to the main database,
        // nor this sampler's, nor PostgreSQL's own autovacuum workers.
        const { rows } = await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname ~ '^${PLATFORM}_t[0-9]+$'`,
        );
        peaks.connections = Math.max(peaks.connections ?? 0, rows[0]!.n);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peaks;
    },
  };
}

async function closePools(): Promise<void> {
  await Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
}

/** PgBouncer in transaction mode in front of the same PostgreSQL, run as the postgres system user (it refuses root). */
async function startPgBouncer(dir: string): Promise<{ port: number; process: ChildProcess } | undefined> {
  if (spawnSync("pgbouncer", ["--version"]).status !== 0) return undefined;
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const user = decodeURIComponent(adminUrl.username || "postgres");
  const password = decodeURIComponent(adminUrl.password);
  await writeFile(join(dir, "userlist.txt"), `"${user}" "${password}"\n`);
  await writeFile(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = host=${adminUrl.hostname} port=${adminUrl.port || 5432}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      `auth_type = ${password ? "scram-sha-256" : "trust"}`,
      `auth_file = ${join(dir, "userlist.txt")}`,
      "pool_mode = transaction",
      "max_client_conn = 2000",
      "default_pool_size = 20",
      "server_idle_timeout = 10",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  const asRoot = process.getuid?.() === 0;
  if (asRoot) spawnSync("chown", ["-R", "postgres", dir]);
  const child = asRoot
    ? spawn("runuser", ["-u", "postgres", "--", "pgbouncer", join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn("pgbouncer", [join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  for (let i = 0; i < 50; i++) {
    const probe = new pg.Client({ connectionString: urlFor("postgres", port) });
    try {
      await probe.connect();
      await probe.end();
      return { port, process: child };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.kill("SIGTERM");
  console.log(`PgBouncer did not start:\n${stderr}${await readFile(join(dir, "pgbouncer.log"), "utf8").catch(() => "")}`);
  return undefined;
}

function printTable(): void {
  console.log(`\n${args.duration} s per measurement; ${ROWS.toLocaleString("en")} rows; PostgreSQL ${postgres.embedded ? "embedded" : "PG_URL"}\n`);
  console.log("| scenario | setup | ops/s | p50 ms | p99 ms | vs A | gateway CPU µs/op | gateway peak RSS MB | peak PG connections | errors |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    const cell = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "" : String(v));
    const errs =
      Object.entries(r.errors)
        .map(([k, v]) => `${k}: ${v}`)
        .join(", ") ||
      (r.note ?? "");
    console.log(
      `| ${r.scenario} | ${r.setup} | ${r.opsPerSecond} | ${cell(r.p50Ms)} | ${cell(r.p99Ms)} | ${cell(r.vsDirect)} | ${cell(r.gatewayCpuMicrosPerOp)} | ${cell(r.gatewayPeakRssMb)} | ${cell(r.peakPgConnections)} | ${errs} |`,
    );
  }
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
