// Kysely on a tenant database through a live gateway (@db-gateway/client/kysely): schema, queries, joins, transactions, streams, introspection, exact values.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sql, type Generated, type Kysely } from "kysely";
import type pg from "pg";
import type { GatewayClient } from "../client-sdk/src/index.js";
import { createKysely } from "../client-sdk/src/kysely-dialect.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

interface Schema {
  owners: { id: Generated<bigint>; name: string };
  pets: {
    id: Generated<bigint>;
    owner_id: bigint | null;
    name: string;
    big: bigint | null;
    price: string | null;
    meta: unknown;
    born: Date | null;
    photo: Uint8Array | null;
    tags: string[] | null;
  };
}

describe("Kysely over a tenant database", () => {
  let t: TestGateway;
  let client: GatewayClient;
  let platform: string;
  let db: Kysely<Schema>;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "acme");
    await admin.createTenant(platform, "other");
    client = t.client();
    db = createKysely<Schema>(client.platform(platform).tenant("acme"));
    direct = await t.pg(`${platform}_acme`);
    await db.schema
      .createTable("owners")
      .addColumn("id", "bigserial", (c) => c.primaryKey())
      .addColumn("name", "text", (c) => c.notNull().unique())
      .execute();
    await db.schema
      .createTable("pets")
      .addColumn("id", "bigserial", (c) => c.primaryKey())
      .addColumn("owner_id", "bigint", (c) => c.references("owners.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("big", "int8")
      .addColumn("price", "numeric")
      .addColumn("meta", "jsonb")
      .addColumn("born", "timestamptz")
      .addColumn("photo", "bytea")
      .addColumn("tags", sql`text[]`)
      .execute();
  });
  after(() => t.close());

  it("insert, select with a join, update", async () => {
    const { id } = await db.insertInto("owners").values({ name: "ann" }).returning("id").executeTakeFirstOrThrow();
    assert.equal(typeof id, "bigint");
    const inserted = await db
      .insertInto("pets")
      .values([
        { owner_id: id, name: "rex" },
        { owner_id: id, name: "tom" },
      ])
      .executeTakeFirstOrThrow();
    assert.equal(inserted.numInsertedOrUpdatedRows, 2n);
    const joined = await db
      .selectFrom("pets")
      .innerJoin("owners", "owners.id", "pets.owner_id")
      .select(["owners.name as owner", "pets.name"])
      .orderBy("pets.name")
      .execute();
    assert.deepEqual(joined, [
      { owner: "ann", name: "rex" },
      { owner: "ann", name: "tom" },
    ]);
    const updated = await db
      .updateTable("pets")
      .set({ name: sql<string>`upper(name)` })
      .where("owner_id", "=", id)
      .executeTakeFirstOrThrow();
    assert.equal(updated.numUpdatedRows, 2n);
    assert.deepEqual((await direct.query("SELECT name FROM pets ORDER BY name")).rows, [{ name: "REX" }, { name: "TOM" }]);
  });

  it("bigint, numeric, jsonb, timestamptz, bytea and text[] round-trip exactly", async () => {
    const values = {
      name: "v",
      big: 9223372036854775807n,
      price: "12345678901234567890.123456789",
      meta: JSON.stringify({ a: [1, "x"], b: null, n: 1.5 }),
      born: new Date("2024-02-29T12:34:56.789Z"),
      photo: new Uint8Array([0, 255, 1, 0]),
      tags: ["a", "b,c", 'd"e', "NULL"],
    };
    const row = await db.insertInto("pets").values(values).returning(["big", "price", "meta", "born", "photo", "tags"]).executeTakeFirstOrThrow();
    const { big, price, born, tags } = values;
    assert.deepEqual(row, { big, price, meta: { a: [1, "x"], b: null, n: 1.5 }, born, photo: Buffer.from(values.photo), tags });
    const stored = await direct.query(
      "SELECT big::text, price::text, meta::text, born = $1 AS same_time, encode(photo, 'hex') AS photo, tags FROM pets WHERE name = 'v'",
      [values.born],
    );
    assert.deepEqual(stored.rows[0], {
      big: "9223372036854775807",
      price: values.price,
      meta: '{"a": [1, "x"], "b": null, "n": 1.5}',
      same_time: true,
      photo: "00ff0100",
      tags: values.tags,
    });
  });

  it("a transaction rolled back on error leaves nothing; a committed one, at its isolation level, stays", async () => {
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await trx.insertInto("owners").values({ name: "bob" }).execute();
        await trx.insertInto("owners").values({ name: "bob" }).execute(); // unique violation
      }),
      (err: { sqlstate?: string }) => err.sqlstate === "23505",
    );
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 0);
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await trx.insertInto("owners").values({ name: "bob" }).execute();
        throw new Error("changed my mind");
      }),
      /changed my mind/,
    );
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 0);

    const level = await db
      .transaction()
      .setIsolationLevel("serializable")
      .execute(async (trx) => {
        await trx.insertInto("owners").values({ name: "cat" }).execute();
        // Not visible outside before commit.
        assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 0);
        return (await sql<{ transaction_isolation: string }>`SHOW transaction_isolation`.execute(trx)).rows[0]!.transaction_isolation;
      });
    assert.equal(level, "serializable");
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 1);
    await assert.rejects(
      db
        .transaction()
        .setAccessMode("read only")
        .execute((trx) => trx.insertInto("owners").values({ name: "dee" }).execute()),
      (err: { sqlstate?: string }) => err.sqlstate === "25006",
    );
  });

  it("a controlled transaction with savepoints", async () => {
    const trx = await db.startTransaction().execute();
    await trx.insertInto("owners").values({ name: "eve" }).execute();
    const sp = await trx.savepoint("before_dup").execute();
    await assert.rejects(sp.insertInto("owners").values({ name: "eve" }).execute());
    await sp.rollbackToSavepoint("before_dup").execute();
    await trx.insertInto("owners").values({ name: "fay" }).execute();
    await trx.commit().execute();
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name IN ('eve', 'fay')")).rowCount, 2);
  });

  it("stream() reads rows over StreamQuery, chunkSize rows per message", async () => {
    const rows = Array.from({ length: 1000 }, (_, i) => BigInt(i + 1));
    const streamed: bigint[] = [];
    for await (const row of db
      .selectFrom(sql<{ g: bigint }>`(SELECT g::int8 AS g FROM generate_series(1, 1000) g)`.as("s"))
      .select("s.g")
      .stream(100)) {
      streamed.push(row.g);
    }
    assert.deepEqual(streamed, rows);
    // Leaving early ends the call (no statement left running at the gateway).
    for await (const row of db
      .selectFrom(sql<{ g: bigint }>`(SELECT g::int8 AS g FROM generate_series(1, 100000) g)`.as("s"))
      .select("s.g")
      .stream(10)) {
      if (row.g === 5n) break;
    }
    assert.deepEqual((await db.selectFrom("owners").select(db.fn.countAll<bigint>().as("n")).execute())[0]!.n > 0n, true);
  });

  it("introspection lists the tenant's tables and columns", async () => {
    const tables = await db.introspection.getTables();
    assert.deepEqual(tables.map((table) => table.name).sort(), ["owners", "pets"]);
    const pets = tables.find((table) => table.name === "pets")!;
    assert.deepEqual(
      pets.columns.map((c) => [c.name, c.dataType]),
      [
        ["id", "int8"],
        ["owner_id", "int8"],
        ["name", "text"],
        ["big", "int8"],
        ["price", "numeric"],
        ["meta", "jsonb"],
        ["born", "timestamptz"],
        ["photo", "bytea"],
        ["tags", "_text"],
      ],
    );
  });

  it("per-tenant handles are cheap and see only their own tenant", async () => {
    const other = createKysely<Schema>(client.platform(platform).tenant("other"));
    assert.deepEqual(await other.introspection.getTables(), []);
    await assert.rejects(other.selectFrom("owners").selectAll().execute(), (err: { sqlstate?: string }) => err.sqlstate === "42P01");
    // Many handles on one client open no connection each: the gateway's pool for the tenant stays within its limit.
    const handles = Array.from({ length: 200 }, () => createKysely<Schema>(client.platform(platform).tenant("acme")));
    const counts = await Promise.all(handles.map((h) => h.selectFrom("owners").select(h.fn.countAll<bigint>().as("n")).executeTakeFirstOrThrow()));
    assert.equal(new Set(counts.map((c) => c.n)).size, 1);
  });
});
