// Batch: atomic and independent, pipelined or one at a time, with deadlines, transaction options and statements that end transactions.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { IsolationLevel } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { StatementLocationSchema } from "../wire/src/gen/dbgateway/v1/errors_pb.js";
import { Code, GatewayError, type Database } from "../client-sdk/src/index.js";
import { ConnectError } from "@connectrpc/connect";
import { rejectsWith } from "./helpers/assert-error.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("Batch", () => {
  let t: TestGateway;
  let platform: string;
  let db: Database;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
    platform = t.platforms[0]!;
    db = t.client().platform(platform);
    await db.query("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)");
  });
  after(() => t.close());

  const names = async () => (await db.query<{ name: string }>("SELECT name FROM items ORDER BY id")).rows.map((r) => r.name);

  it("runs independent statements in order, each with its own result or error; the others commit", async () => {
    await db.query("TRUNCATE items");
    const results = await db.batch([
      { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "one"] },
      { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "duplicate"] },
      { sql: "INSERT INTO items VALUES ($1, $2) RETURNING id", params: [2, "two"] },
      "SELECT count(*)::int AS n FROM items",
    ]);
    assert.equal(results.length, 4);
    assert.ok(!(results[0] instanceof GatewayError) && results[0]!.rowCount === 1);
    const error = results[1];
    assert.ok(error instanceof GatewayError);
    assert.equal(error.code, Code.AlreadyExists);
    assert.equal(error.sqlstate, "23505");
    assert.equal(error.metadata.statement_index, "1");
    assert.ok(!(results[2] instanceof GatewayError));
    assert.deepEqual(!(results[2] instanceof GatewayError) && results[2]!.rows, [{ id: 2 }]);
    assert.deepEqual(!(results[3] instanceof GatewayError) && results[3]!.rows, [{ n: 2 }]);
    assert.deepEqual(await names(), ["one", "two"]);
  });

  it("atomic: all statements commit together", async () => {
    await db.query("TRUNCATE items");
    const results = await db.batch(
      [
        { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "a"] },
        { sql: "INSERT INTO items VALUES ($1, $2)", params: [2, "b"] },
        "SELECT txid_current_if_assigned() IS NOT NULL AS in_tx",
      ],
      { atomic: true },
    );
    assert.deepEqual(!(results[2] instanceof GatewayError) && results[2]!.rows, [{ in_tx: true }]);
    assert.deepEqual(await names(), ["a", "b"]);
  });

  it("atomic: the first error fails the call with the statement's index, and nothing commits", async () => {
    await db.query("TRUNCATE items");
    const err = await rejectsWith(
      db.batch(
        [
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "a"] },
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [2, null] },
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [3, "c"] },
        ],
        { atomic: true },
      ),
      Code.FailedPrecondition,
      "QUERY_FAILED",
    );
    assert.equal(err.sqlstate, "23502");
    assert.equal(err.metadata.statement_index, "1");
    const location = ConnectError.from(err.cause).findDetails(StatementLocationSchema)[0];
    assert.equal(location?.statementIndex, 1);
    assert.deepEqual(await names(), []);
    // The connection (the pool's only one) is clean again.
    assert.deepEqual((await db.query("SELECT txid_current_if_assigned() AS x")).rows, [{ x: null }]);
  });

  it("atomic: statements pipelined behind a failed one never run", async () => {
    await db.query("TRUNCATE items");
    await db.query("CREATE SEQUENCE IF NOT EXISTS probe");
    const before = (await db.query<{ n: string }>("SELECT nextval('probe')::text AS n")).rows[0]!.n;
    const err = await rejectsWith(
      db.batch(
        [
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "a"] },
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "again"] },
          "SELECT nextval('probe')", // a sequence does not roll back: it would show that this ran
          { sql: "INSERT INTO items VALUES ($1, $2)", params: [3, "c"] },
        ],
        { atomic: true },
      ),
      Code.AlreadyExists,
      "QUERY_FAILED",
    );
    assert.equal(err.metadata.statement_index, "1");
    assert.deepEqual(await names(), []);
    const after = (await db.query<{ n: string }>("SELECT nextval('probe')::text AS n")).rows[0]!.n;
    assert.equal(BigInt(after), BigInt(before) + 1n);
  });

  it("atomic: a deadline that passes while pipelined statements run commits nothing and leaves the connection clean", async () => {
    await db.query("TRUNCATE items");
    const insert = (id: number) => ({ sql: "INSERT INTO items VALUES ($1, $2)", params: [id, `n${id}`] });
    const err = await db.batch([insert(1), "SELECT pg_sleep(30)", insert(2)], { atomic: true, timeoutMs: 500 }).then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    assert.deepEqual(await names(), []);
    assert.deepEqual((await db.query("SELECT txid_current_if_assigned() AS x, pg_is_in_recovery() AS r", [], { timeoutMs: 3_000 })).rows, [
      { x: null, r: false },
    ]);
  });

  /** Whether a backend still runs the statement that holds `text`, once the cancel had time to arrive (a backend whose connection was dropped instead runs on). */
  const stillRunning = async (text: string) => {
    const admin = await t.pg();
    try {
      const running = async () =>
        (await admin.query("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()", [text])).rowCount! >
        0;
      for (const until = Date.now() + 1_500; Date.now() < until;) {
        if (!(await running())) return false;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return true;
    } finally {
      await admin.end();
    }
  };

  it("atomic, writes only (COMMIT sent with them): a deadline while a statement runs cancels it, commits nothing and leaves the connection clean", async () => {
    await db.query("TRUNCATE items");
    const stuck = "INSERT INTO items SELECT 2, 'stuck' FROM pg_sleep(30) /* deadline */";
    const err = await db
      .batch([{ sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "n1"] }, stuck, "UPDATE items SET name = 'after'"], { atomic: true, timeoutMs: 500 })
      .then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    assert.equal(await stillRunning("/* deadline */"), false);
    assert.deepEqual(await names(), []);
    // The pool's only connection is free, outside any transaction, within the cancel's time.
    assert.deepEqual((await db.query("SELECT txid_current_if_assigned() AS x", [], { timeoutMs: 3_000 })).rows, [{ x: null }]);
  });

  it("atomic, writes only: a cancelled call's statement is cancelled on PostgreSQL and nothing commits", async () => {
    await db.query("TRUNCATE items");
    const controller = new AbortController();
    const stuck = "INSERT INTO items SELECT 2, 'stuck' FROM pg_sleep(30) /* cancelled */";
    const call = db.batch([{ sql: "INSERT INTO items VALUES ($1, $2)", params: [1, "n1"] }, stuck], {
      atomic: true,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 300);
    await rejectsWith(call, Code.Canceled, "Canceled");
    assert.equal(await stillRunning("/* cancelled */"), false);
    assert.deepEqual((await db.query("SELECT txid_current_if_assigned() AS x", [], { timeoutMs: 3_000 })).rows, [{ x: null }]);
    assert.deepEqual(await names(), []);
  });

  it("independent: what a statement sets is seen by the statements after it in the batch, and reset after the batch", async () => {
    const results = await db.batch(["SELECT set_config('app.note', 'kept', false)", "SELECT current_setting('app.note', true) AS note"]);
    assert.deepEqual(!(results[1] instanceof GatewayError) && results[1]!.rows, [{ note: "kept" }]);
    const { rows } = await db.query<{ note: string | null }>("SELECT current_setting('app.note', true) AS note");
    assert.notEqual(rows[0]!.note, "kept");
  });

  it("a batch with a statement other than a data statement runs one statement at a time, with the same outcome", async () => {
    await db.query("TRUNCATE items");
    const insert = (id: number) => ({ sql: "INSERT INTO items VALUES ($1, $2)", params: [id, `n${id}`] });
    const results = await db.batch([insert(1), "SET LOCAL lock_timeout = '2s'", "SELECT current_setting('lock_timeout') AS t", insert(2)], { atomic: true });
    assert.deepEqual(!(results[2] instanceof GatewayError) && results[2]!.rows, [{ t: "2s" }]);
    assert.deepEqual(await names(), ["n1", "n2"]);
    const err = await rejectsWith(db.batch([insert(3), "SET LOCAL lock_timeout = '2s'", insert(3)], { atomic: true }), Code.AlreadyExists, "QUERY_FAILED");
    assert.equal(err.metadata.statement_index, "2");
    assert.deepEqual(await names(), ["n1", "n2"]);
  });

  it("the largest batch, pipelined whole: 1,000 statements with their rows, atomic and independent", async () => {
    await db.query("TRUNCATE items");
    const inserts = Array.from({ length: 1_000 }, (_, i) => ({
      sql: "INSERT INTO items VALUES ($1, $2) RETURNING id, name",
      params: [i, "x".repeat(1_000) + i],
    }));
    const results = await db.batch(inserts, { atomic: true });
    assert.equal(results.length, 1_000);
    assert.deepEqual(!(results[999] instanceof GatewayError) && results[999]!.rows, [{ id: 999, name: "x".repeat(1_000) + 999 }]);
    const selects = Array.from({ length: 1_000 }, (_, i) => (i === 500 ? "SELECT 1/0" : { sql: "SELECT name FROM items WHERE id = $1", params: [i] }));
    const answers = await db.batch(selects);
    assert.equal(answers.filter((a) => a instanceof GatewayError).length, 1);
    assert.equal((answers[500] as GatewayError).sqlstate, "22012");
    assert.deepEqual(!(answers[999] instanceof GatewayError) && answers[999]!.rows, [{ name: "x".repeat(1_000) + 999 }]);
    assert.equal((await db.query("SELECT count(*)::int AS n FROM items")).rows[0]!.n, 1_000);
  });

  it("independent: a deadline stops a pipelined batch within the part already written (16 statements)", async () => {
    await db.query("TRUNCATE items");
    // 5 ms each: a cancel (the first, then one every 50 ms) stops only the statement running when it arrives.
    const inserts = Array.from({ length: 200 }, (_, i) => ({ sql: "INSERT INTO items SELECT $1, 'slow' FROM pg_sleep(0.005)", params: [i] }));
    const err = await db.batch(inserts, { timeoutMs: 100 }).then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM items", [], { timeoutMs: 5_000 });
    assert.ok(rows[0]!.n >= 1 && rows[0]!.n <= 32, `${rows[0]!.n} statements ran`); // the part written when the deadline passed, and the one before
  });

  it("atomic: applies the transaction options", async () => {
    const results = await db.batch(["SELECT current_setting('transaction_isolation') AS iso, current_setting('transaction_read_only') AS ro"], {
      atomic: true,
      isolationLevel: "repeatable read",
      readOnly: true,
    });
    assert.deepEqual(!(results[0] instanceof GatewayError) && results[0]!.rows, [{ iso: "repeatable read", ro: "on" }]);
    const err = await rejectsWith(db.batch(["DELETE FROM items"], { atomic: true, readOnly: true }), Code.FailedPrecondition, "QUERY_FAILED");
    assert.equal(err.sqlstate, "25006");
  });

  it("a statement that ends an atomic batch's transaction fails it (TRANSACTION_ENDED_BY_STATEMENT)", async () => {
    const err = await rejectsWith(db.batch(["SELECT 1", "COMMIT", "SELECT 2"], { atomic: true }), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
    assert.equal(err.metadata.statement_index, "1");
  });

  it("so does one that replaces it with a chained transaction; ROLLBACK TO SAVEPOINT does not", async () => {
    await db.query("TRUNCATE items");
    const insert = (id: number) => ({ sql: "INSERT INTO items VALUES ($1, $2)", params: [id, `n${id}`] });
    const err = await rejectsWith(
      db.batch([insert(1), "ROLLBACK AND CHAIN", insert(2)], { atomic: true }),
      Code.FailedPrecondition,
      "TRANSACTION_ENDED_BY_STATEMENT",
    );
    assert.equal(err.metadata.statement_index, "1");
    await rejectsWith(db.batch([insert(3), "COMMIT AND CHAIN", insert(4)], { atomic: true }), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
    assert.deepEqual(await names(), ["n3"], "only what the statement itself committed");
    await db.batch([insert(5), "SAVEPOINT s", insert(6), "ROLLBACK TO SAVEPOINT s", insert(7)], { atomic: true });
    assert.deepEqual(await names(), ["n3", "n5", "n7"]);
  });

  it("a statement that opens a transaction in an independent batch is reported and rolled back; the next ones still commit on their own", async () => {
    await db.query("TRUNCATE items");
    const results = await db.batch(["BEGIN", { sql: "INSERT INTO items VALUES ($1, $2)", params: [7, "seven"] }]);
    assert.ok(results[0] instanceof GatewayError);
    assert.equal(results[0].reason, "TRANSACTION_ENDED_BY_STATEMENT");
    assert.ok(!(results[1] instanceof GatewayError));
    assert.deepEqual(await names(), ["seven"]);
  });

  it("checks every statement before taking a connection: an invalid one fails the call with its index and nothing runs", async () => {
    await db.query("TRUNCATE items");
    const err = await rejectsWith(
      t.client().raw.query.batch({
        platform,
        statements: [{ sql: "INSERT INTO items VALUES (1, 'x')" }, { sql: "SELECT $1::numeric", params: [{ kind: { case: "numericValue", value: "12abc" } }] }],
      }),
      Code.InvalidArgument,
      "INVALID_PARAMETER",
    );
    assert.equal(err.metadata.statement_index, "1");
    assert.deepEqual(await names(), []);
    await rejectsWith(db.batch([]), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(
      t.client().raw.query.batch({ platform, statements: [{ sql: "SELECT 1" }], atomic: true, transactionOptions: { isolationLevel: 9 as IsolationLevel } }),
      Code.InvalidArgument,
      "INVALID_REQUEST",
    );
  });

  it("a serialization failure in an atomic batch is ABORTED with reason TRANSACTION_CONFLICT", async () => {
    // Two atomic batches that read-then-write the same row under SERIALIZABLE, interleaved by a lock.
    const wide = await startTestGateway({ platforms: 1 });
    try {
      const w = wide.client().platform(wide.platforms[0]!);
      await w.query("CREATE TABLE counter (id int PRIMARY KEY, n int)");
      await w.query("INSERT INTO counter VALUES (1, 0)");
      const bump = ["SELECT n FROM counter WHERE id = 1", "SELECT pg_sleep(0.3)", "UPDATE counter SET n = n + 1 WHERE id = 1"];
      const results = await Promise.allSettled([
        w.batch(bump, { atomic: true, isolationLevel: "serializable" }),
        w.batch(bump, { atomic: true, isolationLevel: "serializable" }),
      ]);
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
      assert.equal(failed.length, 1);
      assert.equal(failed[0]!.code, Code.Aborted);
      assert.equal(failed[0]!.reason, "TRANSACTION_CONFLICT");
      assert.equal(failed[0]!.sqlstate, "40001");
      assert.equal(failed[0]!.metadata.statement_index, "2");
    } finally {
      await wide.close();
    }
  });

  it("a deadline cancels a long batch on PostgreSQL", async () => {
    const err = await db.batch(["SELECT 1", "SELECT pg_sleep(30)"], { timeoutMs: 500 }).then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    assert.deepEqual((await db.query("SELECT 1 AS one", [], { timeoutMs: 3_000 })).rows, [{ one: 1 }]);
  });
});

describe("An atomic batch's writes reach PostgreSQL in one write with BEGIN and COMMIT", () => {
  let proxy: FaultProxy;
  let t: TestGateway;
  let db: Database;
  before(async () => {
    const target = new URL(pgUrl());
    proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    t = await startTestGateway({ platforms: 1, databaseUrl: proxy.url(pgUrl()) });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE marks (id int PRIMARY KEY)");
  });
  after(async () => {
    await t.close();
    await proxy.close();
  });

  /** Whether one chunk the gateway wrote to PostgreSQL holds every one of `texts`. */
  const together = (...texts: string[]) => proxy.sent.some((chunk) => texts.every((text) => chunk.includes(text)));

  it("writes without RETURNING: BEGIN, the statements and COMMIT in one write; a batch that returns rows sends COMMIT once they are answered", async () => {
    await db.query("SELECT 1");
    proxy.record(true);
    await db.batch(["INSERT INTO marks VALUES (1) /* w1 */", "UPDATE marks SET id = 2 WHERE id = 1 /* w2 */"], { atomic: true });
    assert.ok(together("BEGIN", "w1", "w2", "COMMIT"), "BEGIN, both writes and COMMIT in one write");
    proxy.record(true);
    await db.batch(["INSERT INTO marks VALUES (3) /* r1 */", "UPDATE marks SET id = 4 WHERE id = 3 RETURNING id /* r2 */"], { atomic: true });
    assert.ok(together("BEGIN", "r1", "r2") && !together("r2", "COMMIT"), "COMMIT written after the statements' answers");
    proxy.record(false);
    assert.deepEqual((await db.query("SELECT id FROM marks ORDER BY id")).rows, [{ id: 2 }, { id: 4 }]);
  });
});
