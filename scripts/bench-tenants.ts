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
 * point and real mTLS, so its memory is its own.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { createClient, GatewayError } from "../client-sdk/src/index.js";
import { startEmbeddedPostgres, type EmbeddedServer } from "../server/src/database/embedded-postgres.js";
import { createCertificateAuthority, issueCertificate } from "../server/src/dev/certificates.js";

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
const root = new URL("..", import.meta.url).pathname;

const work = await mkdtemp(join(tmpdir(), "db-gateway-bench-"));
await chmod(work, 0o755);
let embedded: EmbeddedServer | undefined;
let databaseUrl = process.env.PG_URL;
if (!databaseUrl) {
  embedded = await startEmbeddedPostgres({ dir: join(work, "postgres"), persistent: false });
  databaseUrl = embedded.url;
}

const ca = createCertificateAuthority("bench CA");
const serverCert = issueCertificate(ca, { commonName: "localhost", usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
const clientCert = issueCertificate(ca, { commonName: "bench", usage: "client" });
for (const [name, text] of Object.entries({ "ca.crt": ca.cert, "server.crt": serverCert.cert, "server.key": serverCert.key })) {
  await writeFile(join(work, name), text);
}
const platformKey = `bench-${randomBytes(16).toString("hex")}`;
const adminKey = `admin-${randomBytes(16).toString("hex")}`;

const gatewayProcess = spawn(process.execPath, ["--import", "tsx", "server/src/main.ts"], {
  cwd: root,
  env: {
    PATH: process.env.PATH,
    DATABASE_URL: databaseUrl,
    GATEWAY_PORT: "0",
    METRICS_PORT: "0",
    TLS_CERT_FILE: join(work, "server.crt"),
    TLS_KEY_FILE: join(work, "server.key"),
    TLS_CLIENT_CA_FILE: join(work, "ca.crt"),
    API_KEY_BENCH: platformKey,
    API_KEY_ADMIN: adminKey,
    GATEWAY_SECRET: randomBytes(32).toString("hex"),
    // --env MAX_POOLS=200 and the like: gateway settings other than the defaults.
    ...Object.fromEntries((args.env ?? []).map((kv) => kv.split(/=(.*)/s).slice(0, 2))),
  },
  stdio: ["ignore", "pipe", "pipe"],
});
let gatewayOutput = "";
gatewayProcess.stdout.on("data", (d) => (gatewayOutput += d));
gatewayProcess.stderr.on("data", (d) => (gatewayOutput += d));
const port = await new Promise<number>((resolve, reject) => {
  const timer = setInterval(() => {
    const match = /"port":(\d+),"metricsPort":\d+[^\n]*"msg":"serving"/.exec(gatewayOutput);
    if (match) {
      clearInterval(timer);
      resolve(Number(match[1]));
    } else if (gatewayProcess.exitCode !== null) {
      clearInterval(timer);
      reject(new Error(`gateway exited:\n${gatewayOutput}`));
    }
  }, 50);
});

const tls = { ca: ca.cert, cert: clientCert.cert, key: clientCert.key };
const url = `https://localhost:${port}`;
const client = createClient({ url, apiKey: platformKey, tls });
const admin = createClient({ url, apiKey: adminKey, tls }).admin();
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
      peakRssKb = Math.max(peakRssKb, await rssKb(gatewayProcess.pid!));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const cpuBefore = await cpuTicks(gatewayProcess.pid!);
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
  const cpuSeconds = ((await cpuTicks(gatewayProcess.pid!)) - cpuBefore) / 100;
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
    postgres: embedded ? "embedded (max_connections 300)" : "PG_URL",
  };
  console.log(JSON.stringify(result, null, 2));
  if (args.json) await writeFile(args.json, JSON.stringify(result, null, 2) + "\n");
} finally {
  client.close();
  gatewayProcess.kill("SIGTERM");
  await new Promise((r) => gatewayProcess.once("exit", r));
  if (!embedded) {
    // A shared server: remove what the benchmark made.
    const { rows } = await direct.query<{ datname: string }>("SELECT datname FROM pg_database WHERE starts_with(datname, 'bench_')");
    for (const { datname } of rows) await direct.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
    const roles = await direct.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'bench_')");
    for (const { rolname } of roles.rows) await direct.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(rolname)}`);
    await direct.query("DROP ROLE IF EXISTS dbgateway_owner").catch(() => undefined);
  }
  await direct.end();
  await embedded?.stop();
  await rm(work, { recursive: true, force: true });
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** utime + stime of a process, in clock ticks (1/100 s). */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}
