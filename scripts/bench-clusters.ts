/**
 * `npm run bench:clusters`: the same tenants and workload served from one
 * PostgreSQL cluster and from two, by gateways with the same settings.
 * Reports, per configuration and round, calls/s, p50/p99, errors, each
 * cluster's peak connections (from its pg_stat_activity) and the CPU per
 * call of the gateway and of each cluster.
 *
 *   npm run bench:clusters -- --tenants 200 --duration 20 --concurrency 32 --rounds 3 [--cluster-cap 60] [--env MAX_POOLS=200]
 *
 * Starts two embedded PostgreSQL servers of its own (PG_URL is not used: the
 * two must be alike) and two gateway processes (`npm start`'s entry point,
 * real mTLS): "one cluster" with DATABASE_URL on the first server only, "two
 * clusters" with the second added as CLUSTER_URL_SECOND, its tenants placed
 * by the gateway's policy. Runs alternate between the two, so that the
 * machine's noise reaches both alike.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { startEmbeddedPostgres, type EmbeddedServer } from "../server/src/database/embedded-postgres.js";
import { startGatewayProcess, type GatewayProcess } from "../test/helpers/gateway-process.js";
import { cpuSample, postmasterOf, round } from "./measuring.js";

const { values: args } = parseArgs({
  options: {
    tenants: { type: "string", default: "200" },
    duration: { type: "string", default: "20" },
    warmup: { type: "string", default: "3" },
    concurrency: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    writes: { type: "string", default: "0.2" },
    "cluster-cap": { type: "string" },
    json: { type: "string" },
    env: { type: "string", multiple: true, default: [] },
  },
});
const TENANTS = Number(args.tenants);
const DURATION_MS = Number(args.duration) * 1000;
const WARMUP_MS = Number(args.warmup) * 1000;
const CONCURRENCY = Number(args.concurrency);
const ROUNDS = Number(args.rounds);
const WRITES = Number(args.writes);
const CLUSTER_CAP = args["cluster-cap"] === undefined ? undefined : Number(args["cluster-cap"]);
const ROWS = 100;
// Both gateways keep up to MAX_TOTAL_CONNECTIONS (200) on the first server, idle or not.
const MAX_CONNECTIONS = 500;
const SETTINGS = Object.fromEntries((args.env ?? []).map((kv) => kv.split(/=(.*)/s).slice(0, 2)));

for (const [name, value] of Object.entries({ TENANTS, DURATION_MS, CONCURRENCY, ROUNDS })) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
}
if (!(WRITES >= 0 && WRITES <= 1)) throw new Error("--writes must be a fraction from 0 to 1");
if (CLUSTER_CAP !== undefined && !(Number.isInteger(CLUSTER_CAP) && CLUSTER_CAP > 0)) throw new Error("--cluster-cap must be a positive integer");

/** One PostgreSQL server of the run: its URL, postmaster (for its CPU time) and a superuser connection for sampling. */
interface Server {
  readonly name: string;
  readonly url: string;
  readonly postmaster: number | undefined;
  readonly direct: pg.Client;
  readonly embedded: EmbeddedServer;
  readonly dir: string;
}

/** A configuration under test: its gateway and client, and the clusters its tenants are on. */
interface Setup {
  readonly label: string;
  readonly gateway: GatewayProcess;
  readonly client: GatewayClient;
  readonly clusters: readonly Server[];
}

/** What one timed run of one configuration measured. */
interface RunResult {
  setup: string;
  round: number;
  calls: number;
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: Record<string, number>;
  peakConnections: Record<string, number>;
  gatewayCpuMicrosPerCall: number;
  postgresCpuMicrosPerCall: Record<string, number>;
  machineBusyCores: number;
  poolHitRate: number;
  connectionsOpened: number;
  latencies: number[];
}

const servers: Server[] = [];
const gateways: GatewayProcess[] = [];
try {
  for (const name of ["primary", "second"]) servers.push(await startServer(name));
  const [first, second] = servers as [Server, Server];
  const cap = (name: string): Record<string, string> =>
    CLUSTER_CAP === undefined ? {} : { [`CLUSTER_MAX_CONNECTIONS_${name.toUpperCase()}`]: String(CLUSTER_CAP) };
  const one = await startGatewayProcess({ databaseUrl: first.url, env: { ...SETTINGS, ...cap("primary") } });
  gateways.push(one);
  const two = await startGatewayProcess({ databaseUrl: first.url, env: { ...SETTINGS, ...cap("primary"), ...cap("second"), CLUSTER_URL_SECOND: second.url } });
  gateways.push(two);
  const setups: Setup[] = [
    { label: "one cluster", gateway: one, client: one.client(), clusters: [first] },
    { label: "two clusters", gateway: two, client: two.client(), clusters: [first, second] },
  ];
  const tenants = Array.from({ length: TENANTS }, (_, i) => `t${String(i).padStart(5, "0")}`);
  const placement: Record<string, Record<string, number>> = {};
  for (const setup of setups) {
    const started = Date.now();
    placement[setup.label] = await createTenants(setup, tenants);
    console.log(`${setup.label}: ${TENANTS} tenants in ${((Date.now() - started) / 1000).toFixed(1)} s, placed ${JSON.stringify(placement[setup.label])}`);
  }

  const runs: RunResult[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const order = r % 2 === 1 ? setups : [...setups].reverse();
    for (const setup of order) {
      const result = await measure(setup, tenants, r);
      runs.push(result);
      console.log(JSON.stringify(withoutLatencies(result)));
    }
  }

  const summary = setups.map((setup) => summarise(setup, runs));
  const ratio = round(summary[1]!.callsPerSecond / summary[0]!.callsPerSecond);
  const report = {
    tenants: TENANTS,
    concurrency: CONCURRENCY,
    durationSeconds: DURATION_MS / 1000,
    rounds: ROUNDS,
    writes: WRITES,
    clusterCap: CLUSTER_CAP ?? null,
    settings: SETTINGS,
    placement,
    runs: runs.map(withoutLatencies),
    summary,
    twoOverOne: ratio,
  };
  console.table(
    summary.map((s) => ({
      setup: s.setup,
      "calls/s": s.callsPerSecond,
      "p50 ms": s.p50Ms,
      "p99 ms": s.p99Ms,
      errors: Object.values(s.errors).reduce((a, b) => a + b, 0),
      "peak connections": JSON.stringify(s.peakConnections),
      "gateway µs/call": s.gatewayCpuMicrosPerCall,
      "PG µs/call": JSON.stringify(s.postgresCpuMicrosPerCall),
      "hit rate": s.poolHitRate,
    })),
  );
  console.log(`two clusters ÷ one: ${ratio}`);
  if (args.json) await writeFile(args.json, JSON.stringify(report, null, 2) + "\n");
} finally {
  for (const gateway of gateways) await gateway.close().catch(() => undefined);
  for (const server of servers) {
    await server.direct.end().catch(() => undefined);
    await server.embedded.stop().catch(() => undefined);
    await rm(server.dir, { recursive: true, force: true });
  }
}

async function startServer(name: string): Promise<Server> {
  const dir = await mkdtemp(join(tmpdir(), `db-gateway-bench-clusters-${name}-`));
  const embedded = await startEmbeddedPostgres({ dir, persistent: false, maxConnections: MAX_CONNECTIONS });
  const direct = new pg.Client({ connectionString: embedded.url, application_name: "bench-clusters-sampler" });
  await direct.connect();
  return { name, url: embedded.url, postmaster: await postmasterOf(join(dir, "data")), direct, embedded, dir };
}

/**
 * Creates the platform's main database and every tenant (2 at a time) with a
 * 100-row table; says how many went to each cluster. Not 4 at a time as
 * bench:tenants does: four creations at once on a cluster other than the
 * catalog's hold all of the catalog cluster's administrative connections
 * (their locks) while each needs one more, and wait for ever.
 */
async function createTenants(setup: Setup, tenants: readonly string[]): Promise<Record<string, number>> {
  const { platform } = setup.gateway;
  const admin = setup.gateway.adminClient().admin();
  await admin.createTenant(platform, "");
  let next = 0;
  await Promise.all(
    Array.from({ length: 2 }, async () => {
      while (next < tenants.length) {
        const id = tenants[next++]!;
        await admin.createTenant(platform, id);
        const db = setup.client.platform(platform).tenant(id);
        await db.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)");
        await db.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [ROWS]);
      }
    }),
  );
  const placed: Record<string, number> = {};
  for (const d of await admin.listDatabases(platform)) if (d.name !== `${platform}_main`) placed[d.cluster] = (placed[d.cluster] ?? 0) + 1;
  return placed;
}

/** The gateway's connections to each cluster of the setup now, counted by PostgreSQL. */
async function connectionsNow(setup: Setup): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const server of setup.clusters) {
    const { rows } = await server.direct.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway' AND starts_with(datname, $1)",
      [`${setup.gateway.platform}_`],
    );
    counts[server.name] = rows[0]!.n;
  }
  return counts;
}

/** A warm-up, then DURATION_MS of CONCURRENCY callers, each call on a uniformly random tenant: a point select, or (WRITES of them) a one-row update. */
async function measure(setup: Setup, tenants: readonly string[], roundNumber: number): Promise<RunResult> {
  const db = setup.client.platform(setup.gateway.platform);
  const admin = setup.gateway.adminClient().admin();
  const load = async (ms: number, latencies: number[], errors: Map<string, number>) => {
    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (Date.now() - started < ms) {
          const tenant = db.tenant(tenants[Math.floor(Math.random() * tenants.length)]!);
          const id = 1 + Math.floor(Math.random() * ROWS);
          const t0 = performance.now();
          try {
            if (Math.random() >= WRITES) await tenant.query("SELECT id, qty, note FROM items WHERE id = $1", [id]);
            else await tenant.query("UPDATE items SET qty = qty + 1 WHERE id = $1", [id]);
            latencies.push(performance.now() - t0);
          } catch (err) {
            const reason = GatewayError.from(err).reason;
            errors.set(reason, (errors.get(reason) ?? 0) + 1);
          }
        }
      }),
    );
  };
  await load(WARMUP_MS, [], new Map());

  const peak: Record<string, number> = Object.fromEntries(setup.clusters.map((s) => [s.name, 0]));
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      for (const [name, n] of Object.entries(await connectionsNow(setup))) peak[name] = Math.max(peak[name]!, n);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const statsBefore = (await admin.getPoolStats()).totals!;
  const before = await Promise.all(setup.clusters.map((s) => cpuSample(setup.gateway, s.postmaster)));
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  const started = performance.now();
  await load(DURATION_MS, latencies, errors);
  const seconds = (performance.now() - started) / 1000;
  const after = await Promise.all(setup.clusters.map((s) => cpuSample(setup.gateway, s.postmaster)));
  const statsAfter = (await admin.getPoolStats()).totals!;
  sampling = false;
  await sampler;

  const calls = latencies.length;
  const perCall = (micros: number) => Math.round(micros / Math.max(1, calls));
  const hits = Number(statsAfter.hits - statsBefore.hits);
  const misses = Number(statsAfter.misses - statsBefore.misses);
  latencies.sort((a, b) => a - b);
  return {
    setup: setup.label,
    round: roundNumber,
    calls,
    callsPerSecond: Math.round(calls / seconds),
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    errors: Object.fromEntries(errors),
    peakConnections: peak,
    gatewayCpuMicrosPerCall: perCall(after[0]!.gateway - before[0]!.gateway),
    postgresCpuMicrosPerCall: Object.fromEntries(setup.clusters.map((s, i) => [s.name, perCall(after[i]!.postgres - before[i]!.postgres)])),
    machineBusyCores: round((after[0]!.machineBusy - before[0]!.machineBusy) / 1e6 / seconds),
    poolHitRate: round(hits / Math.max(1, hits + misses)),
    connectionsOpened: Number(statsAfter.connectionsOpened - statsBefore.connectionsOpened),
    latencies,
  };
}

/** A configuration's runs together: calls over their time, percentiles over every call, CPU per call weighted by calls, the highest peaks. */
function summarise(setup: Setup, runs: readonly RunResult[]) {
  const mine = runs.filter((r) => r.setup === setup.label);
  const calls = mine.reduce((a, r) => a + r.calls, 0);
  const weighted = (f: (r: RunResult) => number) => Math.round(mine.reduce((a, r) => a + f(r) * r.calls, 0) / Math.max(1, calls));
  const latencies = mine.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const errors: Record<string, number> = {};
  for (const r of mine) for (const [reason, n] of Object.entries(r.errors)) errors[reason] = (errors[reason] ?? 0) + n;
  return {
    setup: setup.label,
    calls,
    callsPerSecond: Math.round(mine.reduce((a, r) => a + r.callsPerSecond, 0) / mine.length),
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    errors,
    peakConnections: Object.fromEntries(setup.clusters.map((s) => [s.name, Math.max(...mine.map((r) => r.peakConnections[s.name]!))])),
    gatewayCpuMicrosPerCall: weighted((r) => r.gatewayCpuMicrosPerCall),
    postgresCpuMicrosPerCall: Object.fromEntries(setup.clusters.map((s) => [s.name, weighted((r) => r.postgresCpuMicrosPerCall[s.name]!)])),
    machineBusyCores: round(mine.reduce((a, r) => a + r.machineBusyCores, 0) / mine.length),
    poolHitRate: round(mine.reduce((a, r) => a + r.poolHitRate * r.calls, 0) / Math.max(1, calls)),
  };
}

function withoutLatencies(run: RunResult): Omit<RunResult, "latencies"> {
  return Object.fromEntries(Object.entries(run).filter(([key]) => key !== "latencies")) as Omit<RunResult, "latencies">;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}
