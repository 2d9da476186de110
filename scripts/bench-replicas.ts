/**
 * Reads served by a streaming replica against the primary, and what
 * read-your-writes costs: point selects at concurrency 8 marked read-only
 * (a replica serves them) and not (the primary), both as Query calls of their
 * own and the second also coalesced (the SDK's default); single-row inserts
 * through a gateway whose cluster has a replica (each answers with a commit
 * token: one more round trip) against one without; and a session's insert
 * followed by its read-only read of it (who served it, and how long the pair
 * took). A scratch PostgreSQL 15 primary with a pg_basebackup replica
 * (test/helpers/streaming-replica.ts) and two gateway processes on it;
 * rounds alternate so that noise falls on every case alike. Both servers and
 * the gateway share this machine's cores: the replica's reads cost the same
 * CPU as the primary's here.
 *
 *   [SECONDS=5] [ROUNDS=3] npx tsx scripts/bench-replicas.ts
 */
import { createClient } from "../client-sdk/src/index.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { startReplicatedPostgres } from "../test/helpers/streaming-replica.js";

const SECONDS = Number(process.env.SECONDS ?? 5);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CONCURRENCY = 8;
const ROWS = 10_000;

const servers = await startReplicatedPostgres();
const platform = "benchreplica";
const secrets = { platformKey: `key-${platform}-0123456789abcdef`, adminKey: "admin-0123456789abcdef0123", gatewaySecret: "s".repeat(64) };
const withReplica = await startGatewayProcess({ databaseUrl: servers.primaryUrl, platform, secrets, env: { CLUSTER_REPLICAS_PRIMARY: servers.replicaUrl } });
const without = await startGatewayProcess({ databaseUrl: servers.primaryUrl, platform, secrets, env: { GATEWAY_INSTANCES: "2" } });
try {
  await withReplica.adminClient().admin().createTenant(platform, "");
  const setup = withReplica.client().platform(platform);
  await setup.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await setup.query("INSERT INTO items SELECT g, g % 100, repeat('x', 60) FROM generate_series(1, $1::int) g", [ROWS]);
  await setup.query("CREATE TABLE history (id bigserial PRIMARY KEY, item int NOT NULL, at timestamptz NOT NULL DEFAULT now())");
  await setup.query("ANALYZE items");

  const unary = (gw: typeof withReplica) => createClient({ ...gw.clientOptions(secrets.platformKey), coalesce: false }).platform(platform);
  const coalesced = withReplica.client().platform(platform);
  const replicaDb = unary(withReplica);
  const plainDb = unary(without);
  const servedBy = async (who: string) => {
    const text = await (await fetch(`http://127.0.0.1:${withReplica.metricsPort}/metrics`)).text();
    return Number(new RegExp(`db_gateway_read_only_calls_total\\{cluster="primary",served_by="${who}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  };
  const point = () => [1 + Math.floor(Math.random() * ROWS)];

  const cases: Record<string, () => Promise<unknown>> = {
    "read, primary, coalesced": () => coalesced.query("SELECT qty FROM items WHERE id = $1", point()),
    "read, primary, own call": () => replicaDb.query("SELECT qty FROM items WHERE id = $1", point()),
    "read, replica (readOnly)": () => replicaDb.query("SELECT qty FROM items WHERE id = $1", point(), { readOnly: true }),
    "insert, no replica": () => plainDb.query("INSERT INTO history (item) VALUES ($1)", point()),
    "insert + token": () => replicaDb.query("INSERT INTO history (item) VALUES ($1)", point()),
    "session insert+read": async () => {
      const session = replicaDb.session();
      const [item] = point();
      await session.query("INSERT INTO history (item) VALUES ($1)", [item]);
      await session.query("SELECT count(*) FROM history WHERE item = $1", [item], { readOnly: true });
    },
  };
  const results = new Map<string, { calls: number; latencies: number[] }>();
  const run = async (name: string, op: () => Promise<unknown>) => {
    const latencies: number[] = [];
    const until = performance.now() + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < until) {
          const started = performance.now();
          await op();
          latencies.push(performance.now() - started);
        }
      }),
    );
    const kept = results.get(name) ?? { calls: 0, latencies: [] };
    kept.calls += latencies.length;
    kept.latencies.push(...latencies);
    results.set(name, kept);
  };
  let sessionReplica = 0;
  let sessionPrimary = 0;
  for (const [name, op] of Object.entries(cases)) await run(name, op); // warm-up, not kept
  results.clear();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, op] of Object.entries(cases)) {
      const [r, p] = name === "session insert+read" ? [await servedBy("r1"), await servedBy("primary")] : [0, 0];
      await run(name, op);
      if (name === "session insert+read") {
        sessionReplica += (await servedBy("r1")) - r;
        sessionPrimary += (await servedBy("primary")) - p;
      }
    }
  }
  console.log(`${CONCURRENCY} callers, ${ROUNDS} rounds of ${SECONDS} s per case, alternating`);
  for (const [name, { calls, latencies }] of results) {
    latencies.sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(2);
    console.log(`${name.padEnd(26)} ${String(Math.round(calls / (ROUNDS * SECONDS))).padStart(6)}/s  p50 ${at(0.5)} ms  p99 ${at(0.99)} ms`);
  }
  const reads = sessionReplica + sessionPrimary;
  console.log(
    `session reads after their own insert: ${sessionReplica} by the replica, ${sessionPrimary} by the primary (${((100 * sessionReplica) / Math.max(1, reads)).toFixed(1)} % on the replica)`,
  );
} finally {
  await withReplica.close();
  await without.close();
  await servers.close();
}
