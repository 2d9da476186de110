// Drizzle on a tenant database through a live gateway (@db-gateway/client/drizzle): migrator, query builder, relational queries, transactions, batches, exact values.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { eq, relations, sql } from "drizzle-orm";
import { bigint, bigserial, customType, jsonb, numeric, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import type pg from "pg";
import type { GatewayClient } from "../client-sdk/src/index.js";
import { drizzle, drizzleMigrationFiles, migrate, type GatewayDrizzleDatabase } from "../client-sdk/src/drizzle-driver.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => "bytea" });

const owners = pgTable("owners", {
  id: bigserial("id", { mode: "bigint" }).primaryKey(),
  name: text("name").notNull().unique(),
});
const pets = pgTable("pets", {
  id: bigserial("id", { mode: "bigint" }).primaryKey(),
  ownerId: bigint("owner_id", { mode: "bigint" }).references(() => owners.id),
  name: text("name").notNull(),
  big: bigint("big", { mode: "bigint" }),
  price: numeric("price"),
  meta: jsonb("meta"),
  born: timestamp("born", { withTimezone: true, precision: 6, mode: "string" }),
  bornAt: timestamp("born_at", { withTimezone: true }),
  photo: bytea("photo"),
  tags: text("tags").array(),
});
const ownersRelations = relations(owners, ({ many }) => ({ pets: many(pets) }));
const petsRelations = relations(pets, ({ one }) => ({ owner: one(owners, { fields: [pets.ownerId], references: [owners.id] }) }));
const schema = { owners, pets, ownersRelations, petsRelations };

/** drizzle-kit's output for the schema above: a journal and one SQL file with statement breakpoints. */
async function writeMigrations(dir: string): Promise<void> {
  await mkdir(join(dir, "meta"), { recursive: true });
  await writeFile(
    join(dir, "meta/_journal.json"),
    JSON.stringify({ version: "7", dialect: "postgresql", entries: [{ idx: 0, version: "7", when: 1_700_000_000_000, tag: "0000_init", breakpoints: true }] }),
  );
  await writeFile(
    join(dir, "0000_init.sql"),
    [
      'CREATE TABLE "owners" ("id" bigserial PRIMARY KEY NOT NULL, "name" text NOT NULL, CONSTRAINT "owners_name_unique" UNIQUE("name"));',
      'CREATE TABLE "pets" ("id" bigserial PRIMARY KEY NOT NULL, "owner_id" bigint, "name" text NOT NULL, "big" bigint, "price" numeric, "meta" jsonb, "born" timestamp (6) with time zone, "born_at" timestamp with time zone, "photo" bytea, "tags" text[]);',
      'ALTER TABLE "pets" ADD CONSTRAINT "pets_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id");',
    ].join("\n--> statement-breakpoint\n"),
  );
}

describe("Drizzle over a tenant database", () => {
  let t: TestGateway;
  let client: GatewayClient;
  let platform: string;
  let db: GatewayDrizzleDatabase<typeof schema>;
  let direct: pg.Client;
  let dir: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "acme");
    client = t.client();
    db = drizzle(client.platform(platform).tenant("acme"), { schema });
    direct = await t.pg(`${platform}_acme`);
    dir = await mkdtemp(join(tmpdir(), "drizzle-migrations-"));
    await writeMigrations(dir);
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("the migrator applies a migration folder to the tenant, once", async () => {
    await migrate(db, { migrationsFolder: dir });
    await migrate(db, { migrationsFolder: dir }); // already applied: nothing runs again
    const applied = await direct.query("SELECT hash FROM drizzle.__drizzle_migrations");
    assert.equal(applied.rowCount, 1);
    const tables = await direct.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1");
    assert.deepEqual(
      tables.rows.map((r) => r.table_name),
      ["owners", "pets"],
    );
  });

  it("the same folder as the fleet's migrations: the gateway's Migrate brings other tenants to it", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "fleet_a");
    const files = await drizzleMigrationFiles(dir);
    assert.deepEqual(
      files.map((f) => [f.version, f.name]),
      [[1n, "init"]],
    );
    const outcomes: string[] = [];
    for await (const progress of admin.migrate(platform, files, { tenantIds: ["fleet_a"] })) {
      if ("database" in progress) outcomes.push(`${progress.database.tenantId}:${progress.database.outcome}`);
    }
    assert.deepEqual(outcomes, ["fleet_a:applied"]);
    const fleetTenant = drizzle(client.platform(platform).tenant("fleet_a"), { schema });
    await fleetTenant.insert(owners).values({ name: "via fleet" });
    assert.deepEqual(await fleetTenant.select({ name: owners.name }).from(owners), [{ name: "via fleet" }]);
  });

  it("insert, select with a join, update, relational queries", async () => {
    const [ann] = await db.insert(owners).values({ name: "ann" }).returning();
    assert.equal(typeof ann!.id, "bigint");
    await db.insert(pets).values([
      { ownerId: ann!.id, name: "rex" },
      { ownerId: ann!.id, name: "tom" },
    ]);
    // Both tables have "id" and "name": rows come as arrays, so neither hides the other.
    const joined = await db.select().from(pets).innerJoin(owners, eq(owners.id, pets.ownerId)).orderBy(pets.name);
    assert.deepEqual(
      joined.map((r) => [r.owners.name, r.pets.name, r.owners.id === r.pets.ownerId]),
      [
        ["ann", "rex", true],
        ["ann", "tom", true],
      ],
    );
    const updated = await db
      .update(pets)
      .set({ name: sql`upper(${pets.name})` })
      .where(eq(pets.ownerId, ann!.id))
      .returning({ name: pets.name });
    assert.deepEqual(updated.map((r) => r.name).sort(), ["REX", "TOM"]);
    const withPets = await db.query.owners.findFirst({ where: eq(owners.name, "ann"), with: { pets: { columns: { name: true }, orderBy: pets.name } } });
    assert.deepEqual(withPets, { id: ann!.id, name: "ann", pets: [{ name: "REX" }, { name: "TOM" }] });
  });

  it("bigint, numeric, jsonb, timestamptz, bytea and text[] round-trip exactly", async () => {
    const values = {
      name: "v",
      big: -9223372036854775808n,
      price: "12345678901234567890.123456789",
      meta: { a: [1, "x"], b: null, nested: { n: 1.5 } },
      born: "2024-02-29 12:34:56.789123+00",
      bornAt: new Date("2024-02-29T12:34:56.789Z"),
      photo: Buffer.from([0, 255, 1, 0]),
      tags: ["a", "b,c", 'd"e', "NULL"],
    };
    const [row] = await db.insert(pets).values(values).returning();
    const [read] = await db.select().from(pets).where(eq(pets.name, "v"));
    for (const got of [row, read]) {
      assert.equal(typeof got!.id, "bigint");
      assert.deepEqual({ ...got!, id: undefined }, { ...values, id: undefined, ownerId: null });
    }
    const stored = await direct.query("SELECT big::text, price::text, born::text, encode(photo, 'hex') AS photo FROM pets WHERE name = 'v'");
    assert.deepEqual(stored.rows[0], { big: "-9223372036854775808", price: values.price, born: "2024-02-29 12:34:56.789123+00", photo: "00ff0100" });
  });

  it("a transaction rolled back on error leaves nothing; tx.rollback() too; a committed one stays", async () => {
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.insert(owners).values({ name: "bob" });
        await tx.insert(owners).values({ name: "bob" });
      }),
      (err: { sqlstate?: string }) => err.sqlstate === "23505",
    );
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.insert(owners).values({ name: "bob" });
        tx.rollback();
      }),
      (err: Error) => err.name === "TransactionRollbackError" || err.constructor.name === "TransactionRollbackError",
    );
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 0);
    const level = await db.transaction(
      async (tx) => {
        await tx.insert(owners).values({ name: "cat" });
        // A nested transaction is a savepoint: its failure leaves the outer one going.
        await assert.rejects(tx.transaction((inner) => inner.insert(owners).values({ name: "cat" })));
        await tx.insert(owners).values({ name: "dee" });
        assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 0);
        return (await tx.execute<{ transaction_isolation: string }>(sql`SHOW transaction_isolation`)).rows[0]!.transaction_isolation;
      },
      { isolationLevel: "repeatable read" },
    );
    assert.equal(level, "repeatable read");
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name IN ('cat', 'dee')")).rowCount, 2);
  });

  it("batch: all the queries in one transaction, results in order; a failing one commits nothing", async () => {
    const [inserted, counted] = await db.batch([
      db.insert(owners).values({ name: "eve" }).returning({ name: owners.name }),
      db.select({ n: sql<number>`count(*)::int` }).from(owners),
    ]);
    assert.deepEqual(inserted, [{ name: "eve" }]);
    assert.equal(counted[0]!.n, (await direct.query("SELECT count(*)::int AS n FROM owners")).rows[0].n);
    await assert.rejects(db.batch([db.insert(owners).values({ name: "fay" }), db.insert(owners).values({ name: "eve" })]));
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'fay'")).rowCount, 0);
  });

  it("per-tenant handles: made per request from the same schema, each sees its own tenant", async () => {
    await t.adminClient().admin().createTenant(platform, "other");
    const other = drizzle(client.platform(platform).tenant("other"), { schema });
    await assert.rejects(other.select().from(owners), (err: { sqlstate?: string }) => err.sqlstate === "42P01");
    const counts = await Promise.all(Array.from({ length: 100 }, () => drizzle(client.platform(platform).tenant("acme"), { schema }).$count(owners)));
    assert.equal(new Set(counts).size, 1);
  });
});
