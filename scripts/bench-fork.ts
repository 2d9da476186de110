/**
 * What a tenant's own calls see while it is forked and backed up: point
 * selects on one tenant at concurrency 4, their latency in a window before,
 * during a ForkTenant of it, and during a Backup of it, and how long each
 * took. Runs against a PostgreSQL that this machine's pg_dump can dump
 * (test/helpers/postgres-for-tools.ts: PG_URL's when it is old enough, else a
 * scratch PostgreSQL 15 from Debian's binaries) and a gateway process.
 *
 *   [ROWS=1000000] npx tsx scripts/bench-fork.ts
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { postgresForTools } from "../test/helpers/postgres-for-tools.js";

const ROWS = Number(process.env.ROWS ?? 1_000_000);
const CONCURRENCY = 4;
const BASELINE_MS = 5_000;

const postgres = await postgresForTools();
const backups = await mkdtemp(join(tmpdir(), "db-gateway-bench-fork-"));
const platform = "benchfork";
const gateway = await startGatewayProcess({ databaseUrl: postgres.url, platform, env: { BACKUP_DIR: backups, PG_BIN_DIR: postgres.binDir } });
try {
  const admin = gateway.adminClient().admin();
  await admin.createTenant(platform, "");
  await admin.createTenant(platform, "source");
  const source = gateway.client().platform(platform).tenant("source");
  await source.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await source.query("INSERT INTO items SELECT g, g % 100, repeat('x', 60) FROM generate_series(1, $1::int) g", [ROWS]);
  await source.query("ANALYZE items");
  const size = (await source.query<{ size: string }>("SELECT pg_size_pretty(pg_database_size(current_database())) AS size")).rows[0]!.size;

  /** Point selects on the source until `done` settles; their latencies in ms. */
  const load = async (done: Promise<unknown>) => {
    const latencies: number[] = [];
    let over = false;
    void done.finally(() => (over = true));
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (!over) {
          const started = performance.now();
          await source.query("SELECT qty FROM items WHERE id = $1", [1 + Math.floor(Math.random() * ROWS)]);
          latencies.push(performance.now() - started);
        }
      }),
    );
    return latencies.sort((a, b) => a - b);
  };
  const describe = (name: string, latencies: number[], ms: number) => {
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(2);
    console.log(
      `${name.padEnd(20)} ${(ms / 1000).toFixed(1).padStart(5)} s  ${latencies.length} calls (${Math.round((latencies.length * 1000) / ms)}/s)  p50 ${at(0.5)} ms  p99 ${at(0.99)} ms  max ${latencies.at(-1)!.toFixed(2)} ms`,
    );
  };
  const timed = async (name: string, work: () => Promise<unknown>) => {
    const started = performance.now();
    const done = work();
    const latencies = await load(done);
    await done;
    describe(name, latencies, performance.now() - started);
  };

  console.log(`source tenant: ${ROWS} rows, ${size}; point selects on it at concurrency ${CONCURRENCY}`);
  await timed("before (baseline)", () => new Promise((resolve) => setTimeout(resolve, BASELINE_MS)));
  await timed("during ForkTenant", () => admin.forkTenant(platform, "source", "fork"));
  await timed("during Backup", () => admin.backup(platform, { tenantIds: ["source"] }));
  await timed("after (baseline)", () => new Promise((resolve) => setTimeout(resolve, BASELINE_MS)));
} finally {
  await gateway.close();
  await dropPlatformDatabases([platform], postgres.url);
  await rm(backups, { recursive: true, force: true });
  await postgres.close();
}
