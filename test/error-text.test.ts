// PostgreSQL's error text withheld from clients when asked (DATABASE_ERROR_TEXT=withhold) while the log keeps it in full, never with a parameter.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { GatewayError, type PlatformDatabase } from "../client-sdk/src/index.js";
import { setDatabaseErrorText } from "../server/src/client-errors.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";

/** A value PostgreSQL quotes in its detail of a unique violation. */
const QUOTED = "quoted-email@example.com";
/** A parameter of the failing statement that PostgreSQL does not quote: it must appear nowhere. */
const UNQUOTED = "unquoted-note-7f3a";

describe("what clients and the log are told of PostgreSQL's errors", () => {
  let t: TestGateway;
  let db: PlatformDatabase;
  const kept = keptLog("info");
  const failedLines = () => kept.lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.msg === "statement failed");

  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { logger: kept.logger, failedStatementLogLevel: "info" } });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE people (email text CONSTRAINT people_email_key UNIQUE, note text)");
    await db.query("INSERT INTO people VALUES ($1, 'first')", [QUOTED]);
  });
  afterEach(() => setDatabaseErrorText("send"));
  after(() => t.close());

  const duplicate = () => db.query("INSERT INTO people (email, note) VALUES ($1, $2)", [QUOTED, UNQUOTED]);
  const failure = async (attempt: Promise<unknown>) => {
    const err = await attempt.then(
      () => assert.fail("the statement succeeded"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof GatewayError, String(err));
    return err;
  };

  it("sends everything PostgreSQL said by default", async () => {
    const err = await failure(duplicate());
    assert.equal(err.sqlstate, "23505");
    assert.match(err.message, /duplicate key value violates unique constraint "people_email_key"/);
    assert.match(err.detail!, new RegExp(QUOTED));
  });

  it("withholds PostgreSQL's message, detail and hint, and keeps the SQLSTATE and where the error was", async () => {
    setDatabaseErrorText("withhold");
    const err = await failure(duplicate());
    assert.equal(err.sqlstate, "23505");
    assert.equal(err.reason, "QUERY_FAILED");
    assert.equal(err.constraint, "people_email_key");
    assert.equal(err.table, "people");
    assert.equal(
      err.message,
      `integrity constraint violation (SQLSTATE 23505, constraint "people_email_key", table "people"): PostgreSQL's message is withheld (DATABASE_ERROR_TEXT)`,
    );
    assert.ok(!err.detail && !err.hint && !err.where);
    assert.ok(!JSON.stringify({ message: err.message, postgres: err.postgres }).includes(QUOTED), "no quoted value reaches the client");

    const syntax = await failure(db.query("SELEC 1"));
    assert.equal(syntax.sqlstate, "42601");
    assert.equal(syntax.position, "1", "the position stays");
    assert.match(syntax.message, /^syntax error or access rule violation \(SQLSTATE 42601\)/);
  });

  it("keeps the gateway's own messages, which quote no data", async () => {
    setDatabaseErrorText("withhold");
    const copy = await failure(db.query("COPY people FROM STDIN"));
    assert.equal(copy.reason, "INVALID_REQUEST");
    assert.match(copy.message, /COPY/);
  });

  it("withholds it in a batch's statement and an interactive transaction's too", async () => {
    setDatabaseErrorText("withhold");
    const batch = await db.batch([{ sql: "SELECT 1" }, { sql: "INSERT INTO people (email, note) VALUES ($1, $2)", params: [QUOTED, UNQUOTED] }]);
    const failed = batch[1];
    assert.ok(failed instanceof GatewayError);
    assert.equal(failed.constraint, "people_email_key");
    assert.ok(!failed.message.includes(QUOTED) && !failed.detail);

    let inner: GatewayError | undefined;
    // The failed statement aborts the transaction, so its COMMIT fails too: that is not what is checked here.
    await db
      .transaction(async (tx) => {
        inner = await failure(tx.query("INSERT INTO people (email, note) VALUES ($1, $2)", [QUOTED, UNQUOTED]));
      })
      .catch(() => undefined);
    assert.equal(inner?.sqlstate, "23505");
    assert.ok(!inner.message.includes(QUOTED) && !inner.detail);
  });

  it("logs a failed statement's full error at the chosen level, with its request id and database, never a parameter", async () => {
    setDatabaseErrorText("withhold");
    const before = failedLines().length;
    await failure(duplicate());
    const line = failedLines().slice(before)[0];
    assert.ok(line, "a statement failed line");
    assert.equal(line.component, "statements");
    assert.equal(line.level, "info");
    assert.equal(line.database, `${t.platforms[0]}_main`);
    assert.ok(typeof line.request_id === "string" && line.request_id.length > 0);
    const postgres = line.postgres as Record<string, unknown>;
    assert.equal(postgres.sqlstate, "23505");
    assert.equal(postgres.constraintName, "people_email_key");
    assert.match(String(postgres.detail), new RegExp(QUOTED), "the log has what the client was not told");
    assert.ok(!kept.lines.some((l) => l.includes(UNQUOTED)), "no parameter in any log line");
  });
});
