// Query through the SDK over mutual TLS: routing to main and tenant databases, reads and writes, no transaction carried into the next call.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("Query through the SDK over mTLS", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway();
    platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "clinic_001");
  });
  after(() => t.close());

  it("runs a parameterized query on the platform's main database", async () => {
    const db = t.client().platform(platform);
    const result = await db.query<{ db: string; next: bigint }>("SELECT current_database() AS db, $1::int8 + 1 AS next", [41]);
    assert.deepEqual(result.rows, [{ db: `${platform}_main`, next: 42n }]);
    assert.equal(result.command, "SELECT");
    assert.equal(result.rowCount, 1);
    assert.deepEqual(
      result.fields.map((f) => [f.name, f.dataTypeID]),
      [
        ["db", 19],
        ["next", 20],
      ],
    );
    assert.ok(result.executionTimeMs > 0);
  });

  it("routes a tenant id to {platform}_{tenant_id}", async () => {
    const tenant = t.client().platform(platform).tenant("clinic_001");
    const { rows } = await tenant.query("SELECT current_database() AS db");
    assert.deepEqual(rows, [{ db: `${platform}_clinic_001` }]);
  });

  it("writes and reads back rows, reporting affected row counts", async () => {
    const tenant = t.client().platform(platform).tenant("clinic_001");
    const created = await tenant.query("CREATE TABLE patients (id int8 PRIMARY KEY, name text NOT NULL, notes text)");
    assert.equal(created.command, "CREATE");
    assert.equal(created.rowCount, 0);
    assert.deepEqual(created.fields, []);
    const inserted = await tenant.query("INSERT INTO patients VALUES ($1, $2, $3), ($4, $5, $6)", [1, "Ada", null, 2, "Grace", ""]);
    assert.equal(inserted.command, "INSERT");
    assert.equal(inserted.rowCount, 2);
    const updated = await tenant.query("UPDATE patients SET notes = $1 WHERE id = $2", ["seen", 1]);
    assert.equal(updated.rowCount, 1);
    const { rows } = await tenant.query("SELECT id, name, notes FROM patients ORDER BY id");
    assert.deepEqual(rows, [
      { id: 1n, name: "Ada", notes: "seen" },
      { id: 2n, name: "Grace", notes: "" },
    ]);
  });

  it("keeps each tenant's data in its own database", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "clinic_002");
    const a = t.client().platform(platform).tenant("clinic_001");
    const b = t.client().platform(platform).tenant("clinic_002");
    await b.query("CREATE TABLE patients (id int8 PRIMARY KEY, name text)");
    const { rows } = await b.query("SELECT count(*)::int AS n FROM patients");
    assert.deepEqual(rows, [{ n: 0 }]);
    const fromA = await a.query("SELECT count(*)::int AS n FROM patients");
    assert.deepEqual(fromA.rows, [{ n: 2 }]);
  });

  it("runs a statement without parameters as exactly one statement", async () => {
    const db = t.client().platform(platform);
    await assert.rejects(db.query("SELECT 1; SELECT 2"), (err: { reason?: string; sqlstate?: string }) => {
      assert.equal(err.reason, "QUERY_FAILED");
      assert.equal(err.sqlstate, "42601");
      return true;
    });
  });

  it("returns int8 as a string when asked, like pg", async () => {
    const { createClient } = await import("../client-sdk/src/index.js");
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), int8: "string" });
    try {
      const { rows } = await client.platform(platform).query("SELECT 9007199254740993::int8 AS n");
      assert.deepEqual(rows, [{ n: "9007199254740993" }]);
    } finally {
      client.close();
    }
  });
});

describe("a connection never carries one call's transaction into the next", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
  });
  after(() => t.close());

  it("a BEGIN left open is not inherited: the next call's write commits on its own", async () => {
    const platform = t.platforms[0]!;
    const db = t.client().platform(platform);
    await db.query("CREATE TABLE notes (v text)");
    await db.query("BEGIN");
    await db.query("INSERT INTO notes VALUES ($1)", ["committed"]);
    const direct = await t.pg(`${platform}_main`);
    const { rows } = await direct.query("SELECT v FROM notes");
    assert.deepEqual(rows, [{ v: "committed" }]);
    const { rows: xid } = await db.query("SELECT txid_current_if_assigned() AS xid");
    assert.deepEqual(xid, [{ xid: null }]);
  });
});
