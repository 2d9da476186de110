/**
 * Compares two builds of the gateway in one run, on a machine whose speed
 * drifts: this checkout's and the one at BASE (a `git worktree` of another
 * commit, with node_modules linked), each its own process on the same
 * PostgreSQL, measured in alternating 2 s windows (after one warm-up window
 * each) of one operation at a given concurrency, each through its own
 * checkout's SDK (so SDK changes are compared too), or through this
 * checkout's with COALESCE=0 or QUERY_STREAM=0. Prints operations per second, median latency and gateway CPU per
 * operation for each, and the queries per QueryStream message (from the
 * gateway's metrics).
 *
 *   git worktree add /tmp/base HEAD~1 && ln -s "$PWD/node_modules" /tmp/base/node_modules
 * COALESCE=0 turns the SDK's coalescing off (every query a call of its own).
 *
 *   BASE=/tmp/base OP=point|seq10|atomic|batch10|tx [COALESCE=0] [WINDOWS=10] [PG_URL=…] npx tsx scripts/compare-gateways.ts [concurrency]
 */
import { startGatewayProcess as startNew } from "../test/helpers/gateway-process.js";
import { callsOf, dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { createWorkloadTables, measuredDatabase, workloadOperation, type Operation } from "./workload.js";
const base = process.env.BASE;
if (base === undefined) throw new Error("BASE: the directory of the other checkout");
const { startGatewayProcess: startOld } = (await import(`${base}/test/helpers/gateway-process.ts`)) as { startGatewayProcess: typeof startNew };
const url = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const conc = Number(process.argv[2] ?? 1);
const windows = Number(process.env.WINDOWS ?? 10);
const gws = { base: await startOld({ databaseUrl: url }), this: await startNew({ databaseUrl: url }) };
try {
  const ops: Record<string, () => Promise<unknown>> = {};
  for (const [k, gw] of Object.entries(gws)) {
    await gw.adminClient().admin().createTenant(gw.platform, "");
    const db = gw.client().platform(gw.platform);
    await createWorkloadTables(db);
    ops[k] = workloadOperation(measuredDatabase(gw, db), (process.env.OP ?? "point") as Operation);
  }
  const lat: Record<string, number[]> = { base: [], this: [] };
  const cpu: Record<string, number> = { base: 0, this: 0 };
  const secs: Record<string, number> = { base: 0, this: 0 };
  const messages: Record<string, number> = { base: 0, this: 0 };
  const statements: Record<string, number> = { base: 0, this: 0 };
  const streamed = async (gw: (typeof gws)["base"]) => {
    const t = { httpUrl: `http://127.0.0.1:${gw.metricsPort}` };
    return [await callsOf(t, gw.platform, "QueryStream"), await callsOf(t, gw.platform, "QueryStream", "db_gateway_statements_total")] as const;
  };
  for (let w = 0; w < windows + 2; w++) {
    const k = w % 2 === 0 ? "base" : "this";
    const gw = gws[k as "base" | "this"];
    const [m0, s0] = await streamed(gw);
    const c0 = await gw.cpuMicros();
    const t0 = performance.now();
    const end = Date.now() + 2000;
    const l: number[] = [];
    await Promise.all(
      Array.from({ length: conc }, async () => {
        while (Date.now() < end) {
          const s = performance.now();
          await ops[k]!();
          l.push(performance.now() - s);
        }
      }),
    );
    if (w < 2) continue; // warm-up
    lat[k]!.push(...l);
    cpu[k]! += (await gw.cpuMicros()) - c0;
    secs[k]! += (performance.now() - t0) / 1000;
    const [m1, s1] = await streamed(gw);
    messages[k]! += m1 - m0;
    statements[k]! += s1 - s0;
  }
  for (const k of ["base", "this"]) {
    const a = lat[k]!.sort((x, y) => x - y);
    console.log(
      `${k}: ${(a.length / secs[k]!).toFixed(0)}/s p50 ${a[a.length >> 1]!.toFixed(3)} ms, gateway cpu ${(cpu[k]! / a.length).toFixed(0)} µs/op, ${(statements[k]! / messages[k]!).toFixed(2)} queries per QueryStream message`,
    );
  }
} finally {
  for (const gw of Object.values(gws)) await gw.close();
  await dropPlatformDatabases(
    Object.values(gws).map((g) => g.platform),
    url,
  );
  await dropOwnerRole(url);
}
