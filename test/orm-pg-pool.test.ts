// The pg-compatible pool (@db-gateway/client/pg) on a tenant database through a live gateway: pg's results, BEGIN … COMMIT as one transaction, and what it refuses.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code } from "../client-sdk/src/index.js";
import { createPgPool, type GatewayPool, type PgQueryResult } from "../client-sdk/src/pg-pool.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("pg-compatible pool over a tenant database", () => {
  let t: TestGateway;
  let pool: GatewayPool;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    const platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "acme");
    pool = createPgPool(t.client().platform(platform).tenant("acme"));
    direct = await t.pg(`${platform}_acme`);
    await pool.query("CREATE TABLE owners (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE)");
    await pool.query(
      "CREATE TABLE pets (id bigserial PRIMARY KEY, owner_id bigint REFERENCES owners, name text, big int8, price numeric, meta jsonb, born timestamptz, photo bytea, tags text[])",
    );
  });
  after(() => t.close());

  it("insert, select with a join, update: rows, rowCount and fields as pg gives them", async () => {
    const owner = await pool.query<{ id: string }>("INSERT INTO owners (name) VALUES ($1) RETURNING id", ["ann"]);
    assert.equal(owner.command, "INSERT");
    assert.equal(owner.rowCount, 1);
    await pool.query("INSERT INTO pets (owner_id, name) VALUES ($1, 'rex'), ($1, 'tom')", [owner.rows[0]!.id]);
    const ours = await pool.query("SELECT o.name AS owner, p.name FROM pets p JOIN owners o ON o.id = p.owner_id ORDER BY p.name");
    const theirs = await direct.query("SELECT o.name AS owner, p.name FROM pets p JOIN owners o ON o.id = p.owner_id ORDER BY p.name");
    assert.deepEqual(ours.rows, theirs.rows);
    assert.deepEqual(
      ours.fields.map((f) => [f.name, f.dataTypeID, f.tableID, f.columnID]),
      theirs.fields.map((f) => [f.name, f.dataTypeID, f.tableID, f.columnID]),
    );
    const updated = await pool.query("UPDATE pets SET name = upper(name) WHERE owner_id = $1", [owner.rows[0]!.id]);
    assert.equal(updated.rowCount, 2);
    assert.equal((await pool.query("CREATE TEMP TABLE scratch (x int)")).rowCount, null);
  });

  it("values come back exactly as pg returns them (int8, numeric, jsonb, timestamptz, bytea, arrays)", async () => {
    const row = [
      9007199254740993n,
      "12345678901234567890.123456789",
      { a: [1, "x"], b: null },
      new Date("2024-02-29T12:34:56.789Z"),
      Buffer.from([0, 255, 1]),
      ["a", "b,c", 'd"e'],
    ];
    const { rows } = await pool.query(
      "INSERT INTO pets (name, big, price, meta, born, photo, tags) VALUES ('v', $1, $2, $3, $4, $5, $6) RETURNING big, price, meta, born, photo, tags",
      row,
    );
    const theirs = await direct.query("SELECT big, price, meta, born, photo, tags FROM pets WHERE name = 'v'");
    assert.deepEqual(rows, theirs.rows);
    assert.deepEqual(rows[0], { big: "9007199254740993", price: row[1], meta: row[2], born: row[3], photo: row[4], tags: row[5] });
  });

  it("array rows, per-query types, the config form and the callback forms", async () => {
    const arrays = await pool.query({ text: "SELECT $1::int8 AS a, 'x' AS b", values: [5n], rowMode: "array" });
    assert.deepEqual(arrays.rows, [["5", "x"]]);
    assert.equal(arrays.rowAsArray, true);
    const typed = await pool.query({ text: "SELECT 5::int8 AS a", types: { getTypeParser: () => (v: string) => `<${v}>` } });
    assert.deepEqual(typed.rows, [{ a: "<5>" }]);
    const viaCallback = await new Promise<PgQueryResult>((resolve, reject) =>
      pool.query("SELECT $1::text AS v", ["cb"], (err, result) => (err ? reject(err) : resolve(result))),
    );
    assert.deepEqual(viaCallback.rows, [{ v: "cb" }]);
    const failed = await new Promise<Error | null>((resolve) => pool.query("SELECT * FROM missing", (err) => resolve(err)));
    assert.equal((failed as { sqlstate?: string } | null)?.sqlstate, "42P01");
  });

  it("BEGIN … COMMIT on a client is one transaction: invisible to others until committed", async () => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN ISOLATION LEVEL SERIALIZABLE");
      assert.deepEqual((await client.query("SHOW transaction_isolation")).rows, [{ transaction_isolation: "serializable" }]);
      await client.query("INSERT INTO owners (name) VALUES ('bob')");
      assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 0);
      assert.equal((await client.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 1);
      assert.equal((await client.query("COMMIT")).command, "COMMIT");
    } finally {
      client.release();
    }
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'bob'")).rowCount, 1);
  });

  it("a transaction rolled back on error: nothing of it stays, and COMMIT after an error reports ROLLBACK as pg does", async () => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("INSERT INTO owners (name) VALUES ('cat')");
      const sqlstate = (sql: string) =>
        client.query(sql).then(
          () => "none",
          (err: { sqlstate?: string }) => err.sqlstate,
        );
      assert.equal(await sqlstate("INSERT INTO owners (name) VALUES ('cat')"), "23505");
      assert.equal(await sqlstate("SELECT 1"), "25P02"); // as on one connection
      assert.equal((await client.query("COMMIT")).command, "ROLLBACK");
      // The client goes on outside a transaction.
      assert.deepEqual((await client.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    } finally {
      client.release();
    }
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'cat'")).rowCount, 0);
  });

  it("savepoints inside a transaction, ROLLBACK, and release() rolling back a transaction left open", async () => {
    const client = await pool.connect();
    await client.query("BEGIN");
    await client.query("INSERT INTO owners (name) VALUES ('dee')");
    await client.query("SAVEPOINT s");
    await assert.rejects(client.query("INSERT INTO owners (name) VALUES ('dee')"));
    await client.query("ROLLBACK TO SAVEPOINT s");
    await client.query("COMMIT");
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name = 'dee'")).rowCount, 1);

    await client.query("BEGIN");
    await client.query("INSERT INTO owners (name) VALUES ('eve')");
    await client.query("ROLLBACK");
    await client.query("BEGIN");
    await client.query("INSERT INTO owners (name) VALUES ('fay')");
    client.release();
    await rejectsWith(client.query("SELECT 1"), Code.FailedPrecondition, "CLIENT_RELEASED");
    // The open transaction is rolled back at release: its row lock would otherwise block this insert.
    await pool.query("INSERT INTO owners (name) VALUES ('fay')");
    assert.equal((await direct.query("SELECT 1 FROM owners WHERE name IN ('eve', 'fay')")).rowCount, 1);
  });

  it("refuses what cannot behave as on a pg session, with a clear error", async () => {
    for (const sql of ["SET search_path TO other", "RESET ALL", "LISTEN chan", "PREPARE p AS SELECT 1", "EXECUTE p", " /* c */ set statement_timeout = 5"]) {
      const error = await rejectsWith(pool.query(sql), Code.Unimplemented, "NOT_SUPPORTED_BY_GATEWAY");
      assert.match(error.message, /not supported through the gateway/);
    }
    await rejectsWith(pool.query({ text: "SELECT 1", name: "named" }), Code.Unimplemented, "NOT_SUPPORTED_BY_GATEWAY");
    await rejectsWith(pool.query({ text: "SELECT 1", submit: () => undefined } as never), Code.Unimplemented, "NOT_SUPPORTED_BY_GATEWAY");
    // SET LOCAL is scoped to the transaction, and works in one.
    const client = await pool.connect();
    await client.query("BEGIN");
    await client.query("SET LOCAL statement_timeout = 1234");
    assert.deepEqual((await client.query("SHOW statement_timeout")).rows, [{ statement_timeout: "1234ms" }]);
    await client.query("COMMIT");
    client.release();
  });

  it("events and counts: connect, acquire, release, remove; end refuses later queries", async () => {
    const events: string[] = [];
    for (const name of ["connect", "acquire", "release", "remove"]) pool.on(name, () => events.push(name));
    const client = await pool.connect();
    assert.equal(pool.totalCount, 1);
    client.release();
    assert.equal(pool.totalCount, 0);
    assert.deepEqual(events, ["connect", "acquire", "release", "remove"]);
    const other = createPgPool(t.client().platform(t.platforms[0]!).tenant("acme"));
    await other.end();
    await rejectsWith(other.query("SELECT 1"), Code.FailedPrecondition, "POOL_ENDED");
  });
});
