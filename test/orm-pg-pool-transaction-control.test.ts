// The pg-compatible pool: statements that must not run outside the transaction the caller is in, nor be dropped.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { createPgPool, type GatewayPool } from "../client-sdk/src/pg-pool.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("pg-compatible pool: transaction boundaries", () => {
  let t: TestGateway;
  let pool: GatewayPool;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    const platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "acme");
    pool = createPgPool(t.client().platform(platform).tenant("acme"));
    direct = await t.pg(`${platform}_acme`);
    await pool.query("CREATE TABLE marks (name text PRIMARY KEY)");
  });
  after(() => t.close());

  const count = async (name: string) => (await direct.query("SELECT 1 FROM marks WHERE name = $1", [name])).rowCount;

  it("several statements in one string after BEGIN are not silently dropped", async () => {
    const client = await pool.connect();
    try {
      // pg runs all three (simple protocol); the gateway cannot: an error, never a silent no-op.
      await assert.rejects(client.query("BEGIN; INSERT INTO marks VALUES ('multi'); COMMIT"));
    } finally {
      client.release();
    }
    await assert.rejects(pool.query("COMMIT; INSERT INTO marks VALUES ('multi2')"));
  });

  it("a block comment that nests does not hide BEGIN: the INSERT after it is rolled back", async () => {
    const client = await pool.connect();
    try {
      await client.query("/* outer /* inner */ still a comment */ BEGIN");
      await client.query("INSERT INTO marks VALUES ('nested')");
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    assert.equal(await count("nested"), 0);
  });

  it("COMMIT AND CHAIN is refused, never taken for a plain COMMIT: the INSERT after it stays in the transaction", async () => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await assert.rejects(client.query("COMMIT AND CHAIN"), /AND CHAIN is not supported through the gateway/);
      await client.query("INSERT INTO marks VALUES ('chained')");
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    assert.equal(await count("chained"), 0);
  });

  it("release() with statements still queued: they run in the transaction it rolls back, not on their own", async () => {
    const client = await pool.connect();
    await client.query("BEGIN");
    // As after Promise.all rejects on its first failure while the other statement still waits: released in a finally.
    const first = client.query("SELECT pg_sleep(0.2)");
    const queued = client.query("INSERT INTO marks VALUES ('queued')");
    client.release();
    await first;
    await queued.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await count("queued"), 0);
  });
});
