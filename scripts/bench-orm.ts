/**
 * `npm run bench:orm`: what each integration of the SDK (the pg-compatible
 * pool, Kysely, Drizzle, Prisma) costs per query over the SDK's own `query()`, against
 * one gateway running as its own process (real mTLS) on the embedded
 * PostgreSQL (or PG_URL). The same point query (one row by primary key) through each:
 *
 *   npm run bench:orm -- --calls 5000 --concurrency 1,16 --rounds 2 [--json out.json]
 *
 * Client CPU is this process's user+system time divided by calls; the
 * gateway's is read from /proc. Rounds alternate between integrations, each
 * round starting with the next one, and each figure is the median of the
 * rounds, so that noise on this shared machine spreads over all of them.
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { eq } from "drizzle-orm";
import { integer, pgTable, text } from "drizzle-orm/pg-core";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { dropOwnerRole, dropPlatformDatabases } from "../test/helpers/gateway.js";
import { startGatewayProcess } from "../test/helpers/gateway-process.js";
import { createClient } from "../client-sdk/src/index.js";
import { createPgPool } from "../client-sdk/src/pg-pool.js";
import { createKysely } from "../client-sdk/src/kysely-dialect.js";
import { drizzle } from "../client-sdk/src/drizzle-driver.js";
import { PrismaGateway } from "../client-sdk/src/prisma-adapter.js";
import { generatePrismaClient } from "../test/helpers/prisma-client.js";
import { measureCalls, type CallsMeasured } from "./measuring.js";

const { values: args } = parseArgs({
  options: {
    calls: { type: "string", default: "5000" },
    concurrency: { type: "string", default: "1,16" },
    rounds: { type: "string", default: "2" },
    json: { type: "string" },
  },
});
const CALLS = Number(args.calls);
const ROUNDS = Number(args.rounds);
const CONCURRENCY = args.concurrency!.split(",").map(Number);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const items = pgTable("items", { id: integer("id").primaryKey(), name: text("name").notNull() });

/** The part of the generated Prisma Client used here. */
interface Prisma {
  item: { findUnique(args: unknown): Promise<unknown> };
  $disconnect(): Promise<void>;
}
const generated = await generatePrismaClient<Prisma>('model Item {\n  id   Int    @id\n  name String\n  @@map("items")\n}\n');

const postgres = await postgresForRun("db-gateway-bench-orm-");
const gateway = await startGatewayProcess({ databaseUrl: postgres.url });
const results: { integration: string; concurrency: number; callsPerSecond: number; clientCpuMicros: number; gatewayCpuMicros: number }[] = [];
try {
  await gateway.adminClient().admin().createTenant(gateway.platform, "");
  // Without coalescing, as `npm run bench:sdk`: each query is its own call, so the figures compare per-call costs.
  const client = createClient({ ...gateway.clientOptions(gateway.platformKey), coalesce: false });
  const db = client.platform(gateway.platform);
  await db.query("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)");
  await db.query("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g");

  const pool = createPgPool(db);
  const kysely = createKysely<{ items: { id: number; name: string } }>(db);
  const orm = drizzle(db);
  const prisma = new generated.PrismaClient({ adapter: new PrismaGateway(db) });
  const id = () => 1 + Math.floor(Math.random() * 1000);
  const integrations: [string, () => Promise<unknown>][] = [
    ["SDK query()", () => db.query('select "id", "name" from "items" where "id" = $1', [id()])],
    ["pg pool query()", () => pool.query('select "id", "name" from "items" where "id" = $1', [id()])],
    ["Kysely selectFrom()", () => kysely.selectFrom("items").select(["id", "name"]).where("id", "=", id()).executeTakeFirst()],
    ["Drizzle select()", () => orm.select({ id: items.id, name: items.name }).from(items).where(eq(items.id, id()))],
    ["Prisma findUnique()", () => prisma.item.findUnique({ where: { id: id() }, select: { id: true, name: true } })],
  ];

  const measure = (call: () => Promise<unknown>, concurrency: number) => measureCalls(gateway, call, { calls: CALLS, concurrency, warmUp: 500 });

  for (const concurrency of CONCURRENCY) {
    const runs = new Map<string, CallsMeasured[]>();
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts with another integration, so none is always measured first (or right after the same neighbour).
      for (let i = 0; i < integrations.length; i++) {
        const [name, call] = integrations[(i + round) % integrations.length]!;
        runs.set(name, [...(runs.get(name) ?? []), await measure(call, concurrency)]);
      }
    }
    for (const [name] of integrations) {
      const r = runs.get(name)!;
      results.push({
        integration: name,
        concurrency,
        callsPerSecond: Math.round(median(r.map((x) => x.callsPerSecond))),
        clientCpuMicros: Math.round(median(r.map((x) => x.clientCpuMicros))),
        gatewayCpuMicros: Math.round(median(r.map((x) => x.gatewayCpuMicros))),
      });
    }
  }
  // What a handle per request costs: making one over a tenant's database handle, before any query.
  const HANDLES = 2_000;
  const handleCosts: [string, () => unknown][] = [
    ["SDK tenant(t)", () => client.platform(gateway.platform).tenant("t")],
    ["pg pool", () => createPgPool(client.platform(gateway.platform).tenant("t"))],
    ["Kysely", () => createKysely(client.platform(gateway.platform).tenant("t"))],
    ["Drizzle", () => drizzle(client.platform(gateway.platform).tenant("t"))],
    ["Prisma Client", () => new generated.PrismaClient({ adapter: new PrismaGateway(client.platform(gateway.platform).tenant("t")) })],
  ];
  const handleMicros: [string, number][] = [];
  for (const [name, make] of handleCosts) {
    for (let i = 0; i < 200; i++) make(); // warm-up
    const started = performance.now();
    for (let i = 0; i < HANDLES; i++) make();
    handleMicros.push([name, Math.round(((performance.now() - started) * 1000) / HANDLES)]);
  }

  await prisma.$disconnect();
  client.close();

  console.log(`\n${CALLS} point queries per measurement, median of ${ROUNDS} rounds\n`);
  console.log("| integration | concurrency | calls/s | client CPU µs/call | over SDK query() µs | gateway CPU µs/call |");
  console.log("|---|---|---|---|---|---|");
  for (const r of results) {
    const base = results.find((b) => b.concurrency === r.concurrency && b.integration === "SDK query()")!;
    console.log(
      `| ${r.integration} | ${r.concurrency} | ${r.callsPerSecond} | ${r.clientCpuMicros} | ${r.clientCpuMicros - base.clientCpuMicros} | ${r.gatewayCpuMicros} |`,
    );
  }
  console.log(`\nMaking a handle per request (${HANDLES} each, no query)\n`);
  console.log("| handle | µs to make |");
  console.log("|---|---|");
  for (const [name, micros] of handleMicros) console.log(`| ${name} | ${micros} |`);
  if (args.json) await writeFile(args.json, JSON.stringify({ calls: CALLS, rounds: ROUNDS, results, handleMicros }, null, 2));
} finally {
  await gateway.close();
  await dropPlatformDatabases([gateway.platform], postgres.url);
  await dropOwnerRole(postgres.url);
  await postgres.close();
  await generated.remove();
}
