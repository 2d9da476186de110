// Kysely and Drizzle: transaction control sent as raw SQL must not leave its statements committed on their own; it is refused, pointing at the ORM's own transactions.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sql, type Kysely } from "kysely";
import type pg from "pg";
import { createKysely } from "../client-sdk/src/kysely-dialect.js";
import { drizzle } from "../client-sdk/src/drizzle-driver.js";
import { sql as drizzleSql } from "drizzle-orm";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("raw transaction control in Kysely and Drizzle", () => {
  let t: TestGateway;
  let db: Kysely<unknown>;
  let platform: string;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
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

  it("Drizzle refuses BEGIN, COMMIT and session SET sent by db.execute, naming db.transaction(); its statements run as before", async () => {
    const d = drizzle(t.client().platform(platform).tenant("acme"));
    for (const statement of ["BEGIN", "COMMIT", "SET search_path TO other"]) {
      await assert.rejects(
        d.execute(drizzleSql.raw(statement)),
        (err: { reason?: string; message: string }) => err.reason === "NOT_SUPPORTED_BY_GATEWAY",
        statement,
      );
    }
    await d.execute(drizzleSql`INSERT INTO marks VALUES ('drizzle')`);
    assert.equal((await direct.query("SELECT 1 FROM marks WHERE name = 'drizzle'")).rowCount, 1);
  });
});
