/**
 * Point selects on random tenants through one gateway process sized for
 * them (a connection per tenant database), as `npm run bench`'s many-tenants
 * scenario, for 8 s at concurrency 64, printing queries per second and the
 * CPU per query of the gateway, of the client (this process) and of
 * PostgreSQL (every `postgres` process). PROF=1: the gateway writes a V8 CPU
 * profile to /tmp/prof. Starts an embedded PostgreSQL (PG_URL is ignored:
 * the local server's max_connections is too low).
 *
 * BASE=<directory>: also a gateway from another checkout (with its
 * node_modules), measured in turns with this one, ROUNDS times each.
 *
 *   [TENANTS=500] [SECONDS=8] [ROUNDS=1] [BASE=dir] [PROF=1] npx tsx scripts/profile-tenants.ts
 */
import { readFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { startGatewayProcess, type GatewayProcess } from "../test/helpers/gateway-process.js";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { mapLimit } from "../test/helpers/wait.js";
import { connectionsOpened, cpuOf, postgresCpu } from "./measuring.js";

/** The CPU time the processes in `after` spent since `before` (a process gone meanwhile is not counted). */
const spent = (before: Map<string, number>, after: Map<string, number>) => [...after].reduce((sum, [pid, micros]) => sum + micros - (before.get(pid) ?? 0), 0);
/** The machine's CPU time so far by kind (the cpu line of /proc/stat), in microseconds. */
async function machineCpu(): Promise<Record<string, number>> {
  const ticks = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.split(/ +/).slice(1).map(Number);
  const kinds = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
  return Object.fromEntries(kinds.map((kind, i) => [kind, ticks[i]! * 10_000]));
}

const TENANTS = Number(process.env.TENANTS ?? 500);
const SECONDS = Number(process.env.SECONDS ?? 8);
const ROUNDS = Number(process.env.ROUNDS ?? 1);
const BASE = process.env.BASE;
delete process.env.PG_URL;
const sizing = { MAX_TOTAL_CONNECTIONS: String(TENANTS + 100), MAX_POOLS: String(TENANTS + 10) };
const extraEnv = process.env.GW_ENV ? Object.fromEntries(process.env.GW_ENV.split(",").map((kv) => kv.split("=") as [string, string])) : {};
// Room for every gateway's connection per tenant.
const postgres = await postgresForRun("profile-tenants-", { maxConnections: (BASE ? 2 : 1) * (TENANTS + 100) + 100 });
const platform = `p${randomBytes(5).toString("hex")}`;
const secret = randomBytes(32).toString("hex");
const start = (root?: string) =>
  startGatewayProcess({
    databaseUrl: postgres.url,
    platform,
    root,
    nodeArgs: [...(process.env.PROF ? ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"] : []), ...(process.env.GW_NODE_ARGS?.split(" ").filter(Boolean) ?? [])],
    env: { ...sizing, GATEWAY_SECRET: secret, ...extraEnv },
  });
const gateways: { name: string; gw: GatewayProcess }[] = [{ name: "this checkout", gw: await start() }];
try {
  if (BASE) gateways.push({ name: BASE, gw: await start(BASE) });
  const { gw } = gateways[0]!;
  const admin = gw.adminClient().admin();
  await admin.createTenant(platform, "template");
  const template = gw.client().platform(platform).tenant("template");
  await template.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await template.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 100) g");
  const tenants = Array.from({ length: TENANTS }, (_, i) => `t${i}`);
  await mapLimit(tenants, 4, (t) => admin.createTenant(platform, t, { template: `${platform}_template` }));
  const sql = "SELECT id, qty, note FROM items WHERE id = $1";
  const pick = () => tenants[Math.floor(Math.random() * TENANTS)]!;
  const measure = async (name: string, gateway: GatewayProcess) => {
    const db = gateway.client().platform(platform);
    const query = (t: string) => db.tenant(t).query(sql, [1 + Math.floor(Math.random() * 100)]);
    await mapLimit(tenants, 16, query);
    const warm = Date.now() + 1000;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (Date.now() < warm) await query(pick());
      }),
    );
    console.log(`measuring: gateway pid ${gateway.pid}`);
    const opened = await connectionsOpened(gateway);
    const [g0, p0, i0, c0, t0] = [await cpuOf(`/proc/${gateway.pid}/stat`), await postgresCpu(), await machineCpu(), process.cpuUsage(), Date.now()];
    const end = t0 + SECONDS * 1000;
    let n = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (Date.now() < end) {
          await query(pick());
          n++;
        }
      }),
    );
    const [g1, p1, i1, c1, t1] = [await cpuOf(`/proc/${gateway.pid}/stat`), await postgresCpu(), await machineCpu(), process.cpuUsage(c0), Date.now()];
    const per = (micros: number) => `${(micros / n).toFixed(0)} µs`;
    console.log(
      `${name}: ${(n / ((t1 - t0) / 1000)).toFixed(0)} queries/s; CPU per query: gateway ${per(g1.user + g1.system - g0.user - g0.system)} (user ${per(g1.user - g0.user)}, system ${per(g1.system - g0.system)}), client ${per(c1.user + c1.system)}, PostgreSQL ${per(spent(p0, p1))}, machine ${Object.keys(
        i1,
      )
        .map((k) => `${k} ${per(i1[k]! - i0[k]!)}`)
        .join(", ")}; ${(await connectionsOpened(gateway)) - opened} connections opened`,
    );
  };
  for (let round = 0; round < ROUNDS; round++)
    for (const { name, gw: gateway } of round % 2 === 0 ? gateways : [...gateways].reverse()) await measure(name, gateway);
} finally {
  for (const { gw } of gateways) await gw.close();
  await postgres.close();
}
