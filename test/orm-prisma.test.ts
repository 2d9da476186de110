// Prisma Client on a tenant database through a live gateway (@db-gateway/client/prisma): a client generated for the test, its queries, transactions and exact types.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import type { GatewayClient } from "../client-sdk/src/index.js";
import { PrismaGateway } from "../client-sdk/src/prisma-adapter.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { generatePrismaClient, type GeneratedPrismaClient } from "./helpers/prisma-client.js";

const MODELS = `
model Owner {
  id   BigInt @id @default(autoincrement())
  name String @unique
  pets Pet[]
  @@map("owners")
}
model Pet {
  id      BigInt    @id @default(autoincrement())
  ownerId BigInt?   @map("owner_id")
  owner   Owner?    @relation(fields: [ownerId], references: [id])
  name    String
  big     BigInt?
  price   Decimal?
  meta    Json?
  born    DateTime? @db.Timestamptz(3)
  photo   Bytes?
  tags    String[]
  @@map("pets")
}
`;

/** The part of the generated client this test uses (it is generated at run time, so not typed here). */
interface Delegate {
  create(args: unknown): Promise<Record<string, unknown>>;
  createMany(args: unknown): Promise<{ count: number }>;
  findMany(args?: unknown): Promise<Record<string, unknown>[]>;
  findUnique(args: unknown): Promise<Record<string, unknown> | null>;
  updateMany(args: unknown): Promise<{ count: number }>;
  count(args?: unknown): Promise<number>;
}
interface Prisma {
  owner: Delegate;
  pet: Delegate;
  $executeRawUnsafe(sql: string): Promise<number>;
  $queryRawUnsafe<T>(sql: string): Promise<T>;
  $transaction<T>(fn: (tx: Prisma) => Promise<T>, options?: { isolationLevel?: string }): Promise<T>;
  $transaction(queries: Promise<unknown>[]): Promise<unknown[]>;
  $disconnect(): Promise<void>;
}

describe("Prisma Client over a tenant database", () => {
  let t: TestGateway;
  let client: GatewayClient;
  let platform: string;
  let generated: GeneratedPrismaClient<Prisma>;
  let prisma: Prisma;
  let direct: pg.Client;
  before(async () => {
    generated = await generatePrismaClient<Prisma>(MODELS);
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "acme");
    client = t.client();
    prisma = new generated.PrismaClient({ adapter: new PrismaGateway(client.platform(platform).tenant("acme")) });
    direct = await t.pg(`${platform}_acme`);
  });
  after(async () => {
    await prisma?.$disconnect();
    await t?.close();
    await generated?.remove();
  });

  it("creates the tables through Prisma (migrate needs the schema engine: see the README)", async () => {
    await prisma.$executeRawUnsafe("CREATE TABLE owners (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE)");
    await prisma.$executeRawUnsafe(
      "CREATE TABLE pets (id bigserial PRIMARY KEY, owner_id bigint REFERENCES owners, name text NOT NULL, big int8, price numeric, meta jsonb, born timestamptz(3), photo bytea, tags text[] NOT NULL DEFAULT '{}')",
    );
    assert.equal((await direct.query("SELECT 1 FROM pg_tables WHERE tablename IN ('owners', 'pets')")).rowCount, 2);
  });

  it("insert, select with a join (include), update", async () => {
    const ann = await prisma.owner.create({ data: { name: "ann", pets: { create: [{ name: "rex" }, { name: "tom" }] } } });
    assert.equal(typeof ann.id, "bigint");
    const withPets = await prisma.owner.findUnique({ where: { name: "ann" }, include: { pets: { orderBy: { name: "asc" }, select: { name: true } } } });
    assert.deepEqual(withPets, { id: ann.id, name: "ann", pets: [{ name: "rex" }, { name: "tom" }] });
    const joined = await prisma.pet.findMany({
      where: { owner: { name: "ann" } },
      select: { name: true, owner: { select: { name: true } } },
      orderBy: { name: "asc" },
    });
    assert.deepEqual(joined, [
      { name: "rex", owner: { name: "ann" } },
      { name: "tom", owner: { name: "ann" } },
    ]);
    assert.deepEqual(await prisma.pet.updateMany({ where: { ownerId: ann.id }, data: { name: "renamed" } }), { count: 2 });
    assert.equal((await direct.query("SELECT 1 FROM pets WHERE name = 'renamed'")).rowCount, 2);
  });

  it("BigInt, Decimal, Json, DateTime, Bytes and String[] round-trip exactly", async () => {
    const { Decimal } = generated;
    const values = {
      name: "v",
      big: 9223372036854775807n,
      price: new Decimal("12345678901234567890.123456789"),
      meta: { a: [1, "x"], b: null, nested: { n: 1.5 } },
      born: new Date("2024-02-29T12:34:56.789Z"),
      photo: new Uint8Array([0, 255, 1, 0]),
      tags: ["a", "b,c", 'd"e', "NULL"],
    };
    const created = await prisma.pet.create({ data: values });
    const read = await prisma.pet.findMany({ where: { name: "v" } });
    for (const row of [created, read[0]!]) {
      assert.equal(row.big, values.big);
      assert.equal((row.price as { toFixed(): string }).toFixed(), "12345678901234567890.123456789");
      assert.deepEqual(row.meta, values.meta);
      assert.deepEqual(row.born, values.born);
      assert.deepEqual(new Uint8Array(row.photo as Uint8Array), values.photo);
      assert.deepEqual(row.tags, values.tags);
    }
    const stored = await direct.query("SELECT big::text, price::text, born = $1 AS same_time, encode(photo, 'hex') AS photo, meta FROM pets WHERE name = 'v'", [
      values.born,
    ]);
    assert.deepEqual(stored.rows[0], {
      big: "9223372036854775807",
      price: "12345678901234567890.123456789",
      same_time: true,
      photo: "00ff0100",
      meta: values.meta,
    });
  });

  it("an interactive transaction rolled back on error leaves nothing; a committed one, at its isolation level, stays", async () => {
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await tx.owner.create({ data: { name: "bob" } });
        await tx.owner.create({ data: { name: "bob" } });
      }),
      (err: { code?: string }) => err.code === "P2002",
    );
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await tx.owner.create({ data: { name: "bob" } });
        throw new Error("changed my mind");
      }),
      /changed my mind/,
    );
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 0);
    const level = await prisma.$transaction(
      async (tx) => {
        await tx.owner.create({ data: { name: "cat" } });
        assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 0);
        return (await tx.$queryRawUnsafe<{ transaction_isolation: string }[]>("SHOW transaction_isolation"))[0]!.transaction_isolation;
      },
      { isolationLevel: "Serializable" },
    );
    assert.equal(level, "serializable");
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 1);
  });

  it("a batch transaction: all its queries commit together, or none", async () => {
    const [dee, count] = await prisma.$transaction([prisma.owner.create({ data: { name: "dee" } }), prisma.owner.count()]);
    assert.equal((dee as { name: string }).name, "dee");
    assert.equal(count, Number((await direct.query("SELECT count(*) AS n FROM owners")).rows[0].n));
    await assert.rejects(prisma.$transaction([prisma.owner.create({ data: { name: "eve" } }), prisma.owner.create({ data: { name: "dee" } })]));
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'eve'")).rowCount, 0);
  });

  it("per-tenant clients over one gateway client: each sees its own tenant", async () => {
    await t.adminClient().admin().createTenant(platform, "other");
    const other = new generated.PrismaClient({ adapter: new PrismaGateway(client.platform(platform).tenant("other")) });
    try {
      await assert.rejects(other.owner.count(), (err: { code?: string }) => err.code === "P2021"); // the table does not exist there
    } finally {
      await other.$disconnect();
    }
  });
});
