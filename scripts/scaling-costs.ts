/**
 * What each tenant database costs as their number grows, for SCALING.md: on
 * one embedded PostgreSQL and one gateway process, at each step of tenants,
 * the registry's pg_database read and the placements' read (time, rows,
 * bytes), the size of a tenant database and of the shared catalogs, the
 * gateway's CPU while idle (it refreshes every REGISTRY_REFRESH_SECS=1 here),
 * and the memory of a pool with one open connection, in the gateway and in
 * PostgreSQL.
 *
 *   npx tsx scripts/scaling-costs.ts --steps 250,500,1000 [--idle 10]
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { postmasterOf, round } from "./measuring.js";

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "250,500,1000" },
    idle: { type: "string", default: "10" },
    json: { type: "string" },
  },
});
const STEPS = args.steps!.split(",").map(Number);
const MOST = Math.max(...STEPS);
const IDLE_MS = Number(args.idle) * 1000;
if (STEPS.some((n) => !Number.isInteger(n) || n < 1)) throw new Error("--steps: positive integers, comma-separated");

const postgres = await postgresForRun("db-gateway-scaling-costs-", { maxConnections: MOST + 100 });
if (!postgres.embedded) throw new Error("run without PG_URL: the script reads its own PostgreSQL's processes");
const postmaster = await postmasterOf(join(postgres.work, "postgres", "data"));
const gateway = await startGatewayProcess({
  databaseUrl: postgres.url,
  env: { REGISTRY_REFRESH_SECS: "1", MAX_POOLS: String(MOST + 10), MAX_TOTAL_CONNECTIONS: String(MOST + 10) },
});
const admin = gateway.adminClient().admin();
const db = gateway.client().platform(gateway.platform);
const direct = new pg.Client({ connectionString: postgres.url });
await direct.connect();
const catalog = new pg.Client({ connectionString: postgres.url.replace(/\/postgres$/, `/catalog_${gateway.platform}`) });
await catalog.connect();

try {
  await admin.createTenant(gateway.platform, "");
  const results = [];
  let made = 0;
  for (const step of STEPS) {
    const creating = performance.now();
    const start = made;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (made < step) await admin.createTenant(gateway.platform, tenant(made++));
      }),
    );
    const createSeconds = (performance.now() - creating) / 1000;

    const registryRead = await timed(direct, "SELECT datname FROM pg_database WHERE datallowconn AND datconnlimit <> -2");
    const placementsRead = await timed(catalog, "SELECT database, cluster FROM public.tenant_placement");
    const sizes = (
      await direct.query<{ tenant_db_bytes: string; pg_database: string; pg_authid: string; pg_shdepend: string; pg_auth_members: string }>(
        `SELECT (SELECT avg(pg_database_size(datname))::bigint FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2) AS tenant_db_bytes,
                pg_total_relation_size('pg_database') AS pg_database, pg_total_relation_size('pg_authid') AS pg_authid,
                pg_total_relation_size('pg_shdepend') AS pg_shdepend, pg_total_relation_size('pg_auth_members') AS pg_auth_members`,
        [`${gateway.platform}_`, `${gateway.platform}_main`],
      )
    ).rows[0]!;
    const placementBytes = (await catalog.query<{ n: string }>("SELECT pg_total_relation_size('public.tenant_placement') AS n")).rows[0]!.n;

    // The gateway idle for IDLE_MS: its refreshes (one a second here) and health checks.
    const cpuBefore = await gateway.cpuMicros();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const idleCpuMsPerSecond = ((await gateway.cpuMicros()) - cpuBefore) / IDLE_MS;

    // A pool with one open connection for every tenant made at this step.
    const rssBefore = await gateway.rssBytes();
    const pgBefore = await postgresPss();
    for (let i = start; i < made; i += 8) {
      await Promise.all(Array.from({ length: Math.min(8, made - i) }, (_, k) => db.tenant(tenant(i + k)).query("SELECT 1")));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const rssAfter = await gateway.rssBytes();
    const pgAfter = await postgresPss();
    const opened = made - start;
    const result = {
      tenants: made,
      createSeconds: round(createSeconds),
      registryRead: { ...registryRead, ms: round(registryRead.ms) },
      placementsRead: { ...placementsRead, ms: round(placementsRead.ms) },
      tenantDatabaseMb: round(Number(sizes.tenant_db_bytes) / 2 ** 20),
      sharedCatalogKb: {
        pg_database: Math.round(Number(sizes.pg_database) / 1024),
        pg_authid: Math.round(Number(sizes.pg_authid) / 1024),
        pg_shdepend: Math.round(Number(sizes.pg_shdepend) / 1024),
        pg_auth_members: Math.round(Number(sizes.pg_auth_members) / 1024),
      },
      tenantPlacementKb: Math.round(Number(placementBytes) / 1024),
      gatewayIdleCpuMsPerSecond: round(idleCpuMsPerSecond),
      gatewayRssMb: round(rssAfter / 2 ** 20),
      gatewayKbPerNewPool: Math.round((rssAfter - rssBefore) / 1024 / opened),
      postgresPssMb: round(pgAfter / 2 ** 20),
      postgresKbPerNewBackend: Math.round((pgAfter - pgBefore) / 1024 / opened),
    };
    console.log(JSON.stringify(result));
    results.push(result);
  }
  if (args.json) await (await import("node:fs/promises")).writeFile(args.json, JSON.stringify(results, null, 2) + "\n");
} finally {
  await catalog.end();
  await direct.end();
  await gateway.close();
  await postgres.close();
}

function tenant(i: number): string {
  return `t${String(i).padStart(6, "0")}`;
}

/** The median of 21 runs of a query, its rows and the bytes of its text result. */
async function timed(client: pg.Client, sql: string): Promise<{ ms: number; rows: number; bytes: number }> {
  const times: number[] = [];
  let rows: unknown[] = [];
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    rows = (await client.query(sql)).rows;
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { ms: times[10]!, rows: rows.length, bytes: JSON.stringify(rows).length };
}

/** The proportional set size of the postmaster and its children (shared memory counted once over them), in bytes. */
async function postgresPss(): Promise<number> {
  let kb = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (Number(pid) !== postmaster && ppid !== postmaster) continue;
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
    kb += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
  }
  return kb * 1024;
}
