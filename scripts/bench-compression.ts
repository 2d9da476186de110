/**
 * `npm run bench:compression`: what gRPC compression (the SDK's `compression:
 * "gzip"`) changes for a 1,000,000-row stream and a ~1 MB single result (a
 * query() answered over the SDK's QueryStream): bytes on the wire, counted by
 * a TCP proxy between the SDK and the gateway (TLS included), rows per second,
 * and the gateway's and the client's CPU. One gateway process (real mTLS) on
 * the embedded PostgreSQL (or PG_URL); rounds alternate between the two
 * clients so that noise on a shared machine spreads over both.
 *
 *   npm run bench:compression -- [--rows 1000000] [--result-rows 9000] [--results 40] [--rounds 2]
 *
 * The last column is what the bytes alone would take on a 100 Mbit/s link:
 * computed, not measured; it says where the network, not the CPU, would be
 * the limit.
 */
import { parseArgs } from "node:util";
import { createClient, type GatewayClient } from "../client-sdk/src/index.js";
import { startFaultProxy } from "../test/helpers/fault-proxy.js";
import { dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "1000000" },
    "result-rows": { type: "string", default: "9000" },
    results: { type: "string", default: "40" },
    rounds: { type: "string", default: "2" },
  },
});
const ROWS = Number(args.rows);
const RESULT_ROWS = Number(args["result-rows"]);
const RESULTS = Number(args.results);
const ROUNDS = Number(args.rounds);
const LINK_BITS_PER_SECOND = 100e6;

/**
 * Rows shaped like an application's table: an id, a name and a status drawn
 * from a few values, an amount, a timestamp, and a hash (which compresses
 * poorly, as identifiers and tokens do).
 */
const SQL = `SELECT g AS id, 'customer-' || (g % 1000) AS name, (ARRAY['new','paid','shipped','returned'])[g % 4 + 1] AS status,
  round((g % 10000) * 1.37, 2) AS amount, timestamptz '2026-01-01' + g * interval '1 minute' AS created_at, md5(g::text) AS token
  FROM generate_series(1, $1::int) g`;

interface Sample {
  bytesToClient: number;
  bytesToServer: number;
  seconds: number;
  gatewayCpuMicros: number;
  clientCpuMicros: number;
  rows: number;
}

const postgres = await postgresForRun("db-gateway-bench-compression-");
const gateway = await startGatewayProcess({ databaseUrl: postgres.url });
const proxy = await startFaultProxy({ host: "127.0.0.1", port: gateway.port });
const clients: GatewayClient[] = [];
try {
  await gateway.adminClient().admin().createTenant(gateway.platform, "");
  const clientFor = (compression: "none" | "gzip") => {
    const c = createClient({ ...gateway.clientOptions(gateway.platformKey), url: `https://localhost:${proxy.port}`, compression });
    clients.push(c);
    return c.platform(gateway.platform);
  };
  const setups = [
    { name: "uncompressed", db: clientFor("none") },
    { name: "gzip", db: clientFor("gzip") },
  ];
  const measure = async (run: () => Promise<number>): Promise<Sample> => {
    const bytes = proxy.bytes;
    const gatewayCpu = await gateway.cpuMicros();
    const cpu = process.cpuUsage();
    const started = performance.now();
    const rows = await run();
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    return {
      bytesToClient: proxy.bytes.toClient - bytes.toClient,
      bytesToServer: proxy.bytes.toServer - bytes.toServer,
      seconds,
      gatewayCpuMicros: (await gateway.cpuMicros()) - gatewayCpu,
      clientCpuMicros: used.user + used.system,
      rows,
    };
  };
  const stream = (db: (typeof setups)[number]["db"]) => async () => {
    let rows = 0;
    for await (const batch of db.stream(SQL, [ROWS]).batches()) rows += batch.length;
    return rows;
  };
  const results = (db: (typeof setups)[number]["db"]) => async () => {
    let rows = 0;
    for (let i = 0; i < RESULTS; i++) rows += (await db.query(SQL, [RESULT_ROWS])).rows.length;
    return rows;
  };
  // Warm-up: connections, JIT, the pool.
  for (const { db } of setups) {
    await stream(db)();
    await results(db)();
  }
  const samples = new Map<string, Sample[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const { name, db } of setups) {
      for (const [scenario, run] of [
        [`${ROWS.toLocaleString("en")}-row stream`, stream(db)],
        [`${RESULTS} results of ${RESULT_ROWS.toLocaleString("en")} rows`, results(db)],
      ] as const) {
        const key = `${scenario}\t${name}`;
        samples.set(key, [...(samples.get(key) ?? []), await measure(run)]);
      }
    }
  }
  const mean = (list: Sample[], f: (s: Sample) => number) => list.reduce((sum, s) => sum + f(s), 0) / list.length;
  console.log(
    "| scenario | client | MB to client (per result) | ratio | rows/s | gateway CPU ms | client CPU ms | bytes ÷ 100 Mbit/s |\n|---|---|--:|--:|--:|--:|--:|--:|",
  );
  const plainBytes = new Map<string, number>();
  for (const [key, list] of samples) {
    const [scenario, name] = key.split("\t") as [string, string];
    const perUnit = scenario.includes("stream") ? 1 : RESULTS;
    const bytes = mean(list, (s) => s.bytesToClient) / perUnit;
    if (name === "uncompressed") plainBytes.set(scenario, bytes);
    const ratio = (plainBytes.get(scenario) ?? bytes) / bytes;
    console.log(
      `| ${scenario} | ${name} | ${(bytes / 1e6).toFixed(2)} | ${ratio.toFixed(2)} | ${Math.round(mean(list, (s) => s.rows / s.seconds)).toLocaleString("en")} | ${(mean(list, (s) => s.gatewayCpuMicros) / 1000 / perUnit).toFixed(0)} | ${(mean(list, (s) => s.clientCpuMicros) / 1000 / perUnit).toFixed(0)} | ${((bytes * 8) / LINK_BITS_PER_SECOND).toFixed(2)} s |`,
    );
  }
  console.log(
    `\nrequests: ${[...samples].map(([key, list]) => `${key.replace("\t", ", ")}: ${Math.round(mean(list, (s) => s.bytesToServer))} bytes`).join("; ")}`,
  );
} finally {
  clients.forEach((c) => c.close());
  await proxy.close();
  await gateway.close();
  await dropPlatformDatabases([gateway.platform], postgres.url);
  await postgres.close();
}
