/**
 * Point selects through one gateway process for 6 s at a given concurrency,
 * printing calls per second, the gateway's CPU per call (from /proc), and
 * the CPU of each of its threads, the client's (this process) and PostgreSQL's
 * (every `postgres` process) per call. GW_OUTPUT=<file> saves what the gateway printed. With PROF=1 the gateway writes a V8 CPU
 * profile (node --cpu-prof) to /tmp/prof. OP=atomic runs the benchmark's
 * write transaction as an atomic batch (an update and an insert) instead,
 * OP=batch10 a batch of 10 point selects, OP=tx the write transaction with
 * transaction(). COALESCE=0 turns the SDK's coalescing off (every query a
 * call of its own).
 *
 *   PG_URL=postgres://postgres@127.0.0.1:5432/postgres [OP=point|atomic|batch10|tx] [COALESCE=0] npx tsx scripts/profile-gateway.ts [concurrency]
 */
import { readdir, writeFile } from "node:fs/promises";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { cpuOf, postgresCpu } from "./measuring.js";
import { createWorkloadTables, measuredDatabase, workloadOperation, type Operation } from "./workload.js";

const url = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const conc = Number(process.argv[2] ?? 1);
const gw = await startGatewayProcess({
  databaseUrl: url,
  nodeArgs: [
    ...(process.env.PROF ? ["--cpu-prof", "--cpu-prof-dir=" + (process.env.PROF_DIR ?? "/tmp/prof")] : []),
    ...(process.env.GW_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
  ],
  env: process.env.GW_LOG ? { LOG_LEVEL: process.env.GW_LOG } : {},
});
try {
  await gw.adminClient().admin().createTenant(gw.platform, "");
  const db = gw.client().platform(gw.platform);
  await createWorkloadTables(db);
  const op = workloadOperation(measuredDatabase(gw, db), (process.env.OP ?? "point") as Operation);
  const end = Date.now() + 6000;
  let n = 0;
  const threads = async () => {
    const m = new Map<string, number>();
    for (const t of await readdir(`/proc/${gw.pid}/task`)) {
      const { name, user, system } = await cpuOf(`/proc/${gw.pid}/task/${t}/stat`);
      m.set(`${t} ${name} user`, user / 1000);
      m.set(`${t} ${name} system`, system / 1000);
    }
    return m;
  };
  const th0 = await threads();
  const pgCpu = async () => [...(await postgresCpu()).values()].reduce((sum, micros) => sum + micros, 0);
  const p0 = await pgCpu();
  const me0 = process.cpuUsage();
  const c0 = await gw.cpuMicros();
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (Date.now() < end) {
        await op();
        n++;
      }
    }),
  );
  const c1 = await gw.cpuMicros();
  const me1 = process.cpuUsage(me0);
  const p1 = await pgCpu();
  const th1 = await threads();
  for (const [k, v] of th1) {
    const d = v - (th0.get(k) ?? 0);
    if (d > 0) console.log(`thread ${k}: ${d} ms`);
  }
  if (process.env.GW_OUTPUT) await writeFile(process.env.GW_OUTPUT, gw.output());
  console.log(
    `${n} calls, ${(n / ((Date.now() - t0) / 1000)).toFixed(0)}/s, gateway cpu ${((c1 - c0) / n).toFixed(0)} µs/call, client (this process) ${((me1.user + me1.system) / n).toFixed(0)}, PostgreSQL ${((p1 - p0) / n).toFixed(0)}`,
  );
} finally {
  await gw.close();
  await dropPlatformDatabases([gw.platform], url);
  await dropOwnerRole(url);
}
