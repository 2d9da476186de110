// A platform's statement policy (STATEMENT_CLASSES_<PLATFORM>): each statement classed by PostgreSQL's grammar, refused classes PERMISSION_DENIED and never sent.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code, createClient, GatewayError, type PlatformDatabase } from "../client-sdk/src/index.js";
import { dropPlatformDatabases, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";

describe("statement policy", () => {
  const strict = `sp${randomBytes(4).toString("hex")}`;
  const open = `so${randomBytes(4).toString("hex")}`;
  const keys = { [strict]: `key-${randomBytes(16).toString("hex")}`, [open]: `key-${randomBytes(16).toString("hex")}` };
  const kept = keptLog("info");
  let t: TestGateway;
  let db: PlatformDatabase;
  let other: PlatformDatabase;

  before(async () => {
    t = await startTestGateway({
      platforms: 0,
      overrides: {
        platformKeys: new Map(Object.entries(keys).map(([platform, key]) => [platform, [key]])),
        statementClasses: new Map([[strict, ["dml"]]]),
        logger: kept.logger,
      },
    });
    const admin = await t.pg();
    for (const platform of [strict, open]) await admin.query(`CREATE DATABASE ${platform}_main`);
    db = createClient(t.clientOptions(keys[strict]!)).platform(strict);
    other = createClient(t.clientOptions(keys[open]!)).platform(open);
    // The strict platform's table, made by its owner as a migration would (the policy allows it no DDL).
    await db.query("SELECT 1"); // adopts the database: its role exists
    const inside = await t.pg(`${strict}_main`);
    await inside.query(`CREATE TABLE items (id int PRIMARY KEY, name text); ALTER TABLE items OWNER TO ${strict}_main`);
  });
  after(async () => {
    await t.close();
    await dropPlatformDatabases([strict, open]);
  });

  const refused = async (attempt: Promise<unknown>, kind: string) => {
    const err = await attempt.then(
      () => assert.fail("the statement ran"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof GatewayError, String(err));
    assert.equal(err.code, Code.PermissionDenied, err.message);
    assert.equal(err.metadata.statement_class, kind);
    assert.match(err.message, new RegExp(`class "${kind}"`));
  };

  it("runs queries and data changes, however written", async () => {
    await db.query("INSERT INTO items VALUES ($1, 'a')", [1]);
    await db.query("/* a comment */ update items SET name = 'b' WHERE id = 1");
    await db.query("WITH moved AS (UPDATE items SET name = 'c' RETURNING id) SELECT count(*) FROM moved");
    await db.query("EXPLAIN SELECT * FROM items");
    assert.deepEqual((await db.query("SELECT name FROM items")).rows, [{ name: "c" }]);
  });

  it("refuses every other class by PostgreSQL's grammar, not the first word, and sends nothing", async () => {
    for (const [sql, kind] of [
      ["CREATE TABLE sneaky (id int)", "ddl"],
      ["-- drop it\n  DROP TABLE items", "ddl"],
      ["SELECT 1 AS one INTO sneaky", "ddl"],
      ["SELECT 1 AS a INTO sneaky UNION SELECT 2", "ddl"],
      ["(SELECT 1 AS a INTO sneaky) EXCEPT SELECT 2", "ddl"],
      ["EXPLAIN ANALYZE CREATE TABLE sneaky AS SELECT 1", "ddl"],
      ["TRUNCATE items", "ddl"],
      ["DO $$ BEGIN CREATE TABLE sneaky (id int); END $$", "code"],
      ["LISTEN somewhere", "listen"],
      ["COPY items TO STDOUT", "copy"],
      ["SET search_path = pg_temp", "set"],
    ] as const) {
      await refused(db.query(sql), kind);
    }
    const inside = await t.pg(`${strict}_main`);
    assert.equal((await inside.query("SELECT to_regclass('public.sneaky') AS found")).rows[0].found, null, "nothing reached PostgreSQL");
    assert.equal((await inside.query("SELECT count(*)::int AS n FROM items")).rows[0].n, 1);
  });

  it("classes a statement with a backslash as PostgreSQL reads it with standard_conforming_strings off too", async () => {
    // Read with the setting on, two string literals; with it off (a session may turn it off), SELECT … INTO.
    const disguised = "SELECT 'a\\', ' AS x INTO sneaky FROM (SELECT 1) s --'";
    const attempt = db.transaction(async (tx) => {
      await tx.query("SELECT set_config('standard_conforming_strings', 'off', true)");
      await tx.query(disguised);
    });
    await refused(attempt, "ddl");
    const inside = await t.pg(`${strict}_main`);
    assert.equal((await inside.query("SELECT to_regclass('public.sneaky') AS found")).rows[0].found, null);
    // Backslashes in ordinary literals and patterns still run.
    assert.deepEqual((await db.query("SELECT 'it''s' AS a, 'x1' ~ '\\d' AS digit")).rows, [{ a: "it's", digit: true }]);
  });

  it("runs cursors and SET CONSTRAINTS as data statements", async () => {
    await db.transaction(async (tx) => {
      await tx.query("SET CONSTRAINTS ALL DEFERRED");
      await tx.query("DECLARE items_cursor CURSOR FOR SELECT id FROM items ORDER BY id");
      assert.equal((await tx.query("FETCH 1 FROM items_cursor")).rows.length, 1);
      await tx.query("CLOSE items_cursor");
    });
    await refused(
      db.transaction(async (tx) => {
        await tx.query("DECLARE c CURSOR FOR SELECT 1 INTO sneaky");
      }),
      "ddl",
    );
  });

  it("refuses text the grammar cannot read rather than let it through", async () => {
    const err = await db.query("SELEC 1").then(
      () => assert.fail("ran"),
      (e: unknown) => e as GatewayError,
    );
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.message, /cannot be parsed: syntax error/);
  });

  it("applies to batches, interactive transactions and Listen calls", async () => {
    const batch = db.batch([{ sql: "INSERT INTO items VALUES (2, 'x')" }, { sql: "CREATE TABLE sneaky (id int)" }], { atomic: true });
    await refused(batch, "ddl");
    assert.equal((await db.query("SELECT count(*)::int AS n FROM items WHERE id = 2")).rows[0]!.n, 0, "nothing of the batch ran");

    await db.transaction(async (tx) => {
      await tx.query("INSERT INTO items VALUES (3, 'y')");
      await refused(tx.query("ALTER TABLE items ADD COLUMN extra int"), "ddl");
      // The refused statement never reached PostgreSQL: the transaction goes on and commits.
      await tx.query("INSERT INTO items VALUES (4, 'z')");
    });
    assert.equal((await db.query("SELECT count(*)::int AS n FROM items WHERE id IN (3, 4)")).rows[0]!.n, 2);

    await refused(db.listen("somewhere"), "listen");
  });

  it("leaves platforms without a policy alone, and logs each refusal", async () => {
    await other.query("CREATE TABLE free (id int)");
    await other.query("DROP TABLE free");
    const before = kept.lines.length;
    await refused(db.query("CREATE TABLE logged (id int)"), "ddl");
    const line = kept.lines
      .slice(before)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.event === "statement_class");
    assert.ok(line, kept.lines.slice(before).join("\n"));
    assert.equal(line.component, "auth");
    assert.equal(line.principal, strict);
    assert.equal(line.database, `${strict}_main`);
  });
});
