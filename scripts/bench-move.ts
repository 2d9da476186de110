/**
 * `npx tsx scripts/bench-move.ts`: the pause of MoveTenant. One tenant
 * (a table with a serial key, ROWS rows) is moved back and forth between two
 * PostgreSQL 15 clusters with wal_level = logical, MOVES times, while
 * WRITERS callers insert through the gateway without pause. Reports each
 * move's pause (the tenant's calls held), its whole duration, the writes
 * acknowledged and failed around it, and the longest a write waited.
 *
 *   npx tsx scripts/bench-move.ts --moves 6 --writers 4 --rows 100000
 *
 * The catalog's cluster is an embedded PostgreSQL (or PG_URL); the gateway
 * runs in this process (test/helpers/gateway.ts), with real mTLS.
 */
import { parseArgs } from "node:util";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { postgresForTools } from "../test/helpers/postgres-for-tools.js";

const { values: args } = parseArgs({
  options: {
    moves: { type: "string", default: "6" },
    writers: { type: "string", default: "4" },
    rows: { type: "string", default: "100000" },
  },
});
const MOVES = Number(args.moves);
const WRITERS = Number(args.writers);
const ROWS = Number(args.rows);
const LOGICAL = { wal_level: "logical", max_replication_slots: "10", max_wal_senders: "10" };

const run = await postgresForRun("db-gateway-bench-move-");
process.env.PG_URL = run.url;
const { startTestGateway } = await import("../test/helpers/gateway.js");
const clusters = await Promise.all([postgresForTools({ settings: LOGICAL }), postgresForTools({ settings: LOGICAL })]);
const t = await startTestGateway({
  platforms: 1,
  overrides: {
    clusters: [
      { name: "east", url: clusters[0].url },
      { name: "west", url: clusters[1].url },
    ],
    pgBinDir: clusters[0].binDir,
  },
});
try {
  const platform = t.platforms[0]!;
  const admin = t.adminClient().admin();
  await admin.createTenant(platform, "moving", { cluster: "east" });
  const db = t.client().platform(platform).tenant("moving");
  await db.query("CREATE TABLE item (id bigserial PRIMARY KEY, body text NOT NULL)");
  await db.query("INSERT INTO item (body) SELECT repeat('x', 100) FROM generate_series(1, $1::int)", [ROWS]);

  let stop = false;
  let acknowledged = 0;
  let failed = 0;
  let slowest = 0;
  const errors = new Map<string, number>();
  const writer = async () => {
    while (!stop) {
      const started = performance.now();
      try {
        await db.query("INSERT INTO item (body) VALUES ('w')");
        acknowledged++;
      } catch (err) {
        failed++;
        const reason = (err as { reason?: string }).reason ?? String(err);
        errors.set(reason, (errors.get(reason) ?? 0) + 1);
      }
      slowest = Math.max(slowest, performance.now() - started);
    }
  };
  const writers = Array.from({ length: WRITERS }, () => writer());
  const ms = (d: { seconds: bigint; nanos: number } | undefined) => Number(d?.seconds ?? 0n) * 1000 + (d?.nanos ?? 0) / 1e6;
  console.log(`| move | pause ms | move s | writes acknowledged during | failed | slowest write ms |`);
  console.log(`|---|---:|---:|---:|---:|---:|`);
  const pauses: number[] = [];
  for (let i = 0; i < MOVES; i++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const to = i % 2 === 0 ? "west" : "east";
    const [a0, f0] = [acknowledged, failed];
    slowest = 0;
    const moved = await admin.moveTenant(platform, "moving", to, { dropSource: true, timeoutMs: 600_000 });
    pauses.push(ms(moved.pause));
    console.log(
      `| ${moved.sourceCluster} → ${to} | ${ms(moved.pause).toFixed(0)} | ${(ms(moved.duration) / 1000).toFixed(1)} | ${acknowledged - a0} | ${failed - f0} | ${slowest.toFixed(0)} |`,
    );
  }
  stop = true;
  await Promise.all(writers);
  const sorted = [...pauses].sort((a, b) => a - b);
  console.log(
    `\npause: median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms, max ${sorted.at(-1)!.toFixed(0)} ms; failed writes by reason: ${JSON.stringify(Object.fromEntries(errors))}`,
  );
} finally {
  await t.close();
  await Promise.all(clusters.map((c) => c.close()));
  await run.close();
}
