// Review reproduction for the Kysely dialect: transaction control sent as raw SQL on one connection must not leave its statements committed on their own.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sql, type Kysely } from "kysely";
import type pg from "pg";
import { createKysely } from "../client-sdk/src/kysely-dialect.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("Kysely: raw transaction control on one connection", () => {
  let t: TestGateway;
  let db: Kysely<unknown>;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    const platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "acme");
    db = createKysely(t.client().platform(platform).tenant("acme"));
    direct = await t.pg(`${platform}_acme`);
    await sql`CREATE TABLE marks (name text PRIMARY KEY)`.execute(db);
  });
  after(() => t.close());

  it("BEGIN … ROLLBACK by raw SQL on db.connection() rolls back, or is refused: never committed statement by statement", async () => {
    const outcome = await db
      .connection()
      .execute(async (c) => {
        await sql`BEGIN`.execute(c);
        await sql`INSERT INTO marks VALUES ('raw')`.execute(c);
        await sql`ROLLBACK`.execute(c);
      })
      .then(
        () => "ran",
        () => "refused",
      );
    const rows = (await direct.query("SELECT 1 FROM marks WHERE name = 'raw'")).rowCount;
    assert.ok(outcome === "refused" || rows === 0, `${outcome}, ${rows} row(s) kept`);
  });
});
