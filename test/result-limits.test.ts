// Buffered results against their limits: each call's rows and bytes, and the gateway's budget for all.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { Code, createClient, GatewayError, type Database, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { metricValue, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

/** `n` rows of one short value: the row limit is reached long before the byte limit. */
const narrow = (n: number) => `SELECT g FROM generate_series(1, ${n}) g`;
/** `n` rows of one 95-byte value, each 101 bytes encoded: ResultSet.rows' tag and length around a ListValue entry's (2) around a Value's (2) around the text. */
const wide = (n: number) => `SELECT repeat('x', 95) FROM generate_series(1, ${n})`;
const WIDE_ROW_BYTES = 101;

describe("buffered results: each call's limits", () => {
  const limits = { maxRows: 1_000, maxBytes: 100_000, maxBufferedBytes: 64 * 1024 * 1024 };
  /** The most wide rows within the byte limit (990), and so fewer than the row limit. */
  const mostWide = Math.floor(limits.maxBytes / WIDE_ROW_BYTES);
  let t: TestGateway;
  let platform: string;
  let db: Database;
  let unary: GatewayClient;
  let many: GatewayClient;
  before(async () => {
    // One connection: a QueryMany call's queries are pipelined on it, and a cut connection must come back.
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 }, overrides: { results: limits } });
    platform = t.platforms[0]!;
    db = t.client().platform(platform);
    unary = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
    many = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: false });
    await db.query("CREATE TABLE marks (v int)");
  });
  after(async () => {
    unary.close();
    many.close();
    await t.close();
  });

  /** Each path a buffered result takes, returning the rows the client got. */
  const paths: { name: string; run: (sql: string) => Promise<number> }[] = [
    { name: "Query", run: async (sql) => (await unary.platform(platform).query(sql)).rows.length },
    { name: "QueryStream (the SDK's query())", run: async (sql) => (await db.query(sql)).rows.length },
    {
      // Two queries of one turn, without QueryStream: one QueryMany call.
      name: "QueryMany (the SDK's query() with queryStream: false)",
      run: async (sql) => (await Promise.all([many.platform(platform).query(sql), many.platform(platform).query("SELECT 1")]))[0].rows.length,
    },
    { name: "Batch", run: async (sql) => batchRows((await db.batch([sql]))[0]!) },
    { name: "atomic Batch", run: async (sql) => batchRows((await db.batch([sql], { atomic: true }))[0]!) },
    { name: "Transaction", run: (sql) => db.transaction(async (tx) => (await tx.query(sql)).rows.length) },
  ];

  for (const path of paths) {
    it(`${path.name}: a result at the limits is served whole; a row or a byte more is RESOURCE_EXHAUSTED (RESULT_TOO_LARGE)`, async () => {
      assert.equal(await path.run(narrow(limits.maxRows)), limits.maxRows);
      const byRows = await rejectsWith(path.run(narrow(limits.maxRows + 1)), Code.ResourceExhausted, "RESULT_TOO_LARGE");
      assert.equal(byRows.metadata.limit, "MAX_RESULT_ROWS");
      assert.equal(byRows.metadata.statement_sent, "true");
      assert.match(byRows.message, /more than 1000 rows.*StreamQuery.*may or may not have committed/);
      assert.equal(await path.run(wide(mostWide)), mostWide);
      const byBytes = await rejectsWith(path.run(wide(mostWide + 1)), Code.ResourceExhausted, "RESULT_TOO_LARGE");
      assert.equal(byBytes.metadata.limit, "MAX_RESULT_BYTES");
      assert.equal(byBytes.metadata.max, String(limits.maxBytes));
    });
  }

  it("StreamQuery is not limited: it streams", async () => {
    let count = 0;
    for await (const row of db.stream(wide(5 * limits.maxRows))) count += row ? 1 : 0;
    assert.equal(count, 5 * limits.maxRows);
  });

  it("Batch: the limits apply to a batch's results together, and the error names the statement that passed them", async () => {
    assert.deepEqual((await db.batch([narrow(600), narrow(400)])).map(batchRows), [600, 400]);
    const byRows = await rejectsWith(db.batch([narrow(600), narrow(401), "SELECT 1"]), Code.ResourceExhausted, "RESULT_TOO_LARGE");
    assert.equal(byRows.metadata.statement_index, "1");
    assert.deepEqual((await db.batch([wide(500), wide(mostWide - 500)], { atomic: true })).map(batchRows), [500, mostWide - 500]);
    const byBytes = await rejectsWith(db.batch([wide(500), wide(mostWide - 499)], { atomic: true }), Code.ResourceExhausted, "RESULT_TOO_LARGE");
    assert.equal(byBytes.metadata.statement_index, "1");
    // Not pipelined (SET is not a data statement): one statement at a time, the same limits.
    const oneByOne = await rejectsWith(db.batch(["SET work_mem = '8MB'", narrow(600), narrow(401)]), Code.ResourceExhausted, "RESULT_TOO_LARGE");
    assert.equal(oneByOne.metadata.statement_index, "2");
  });

  it("QueryMany: only the query past the limit fails, also when pipelined on one connection between others", async () => {
    const { results } = await t.client().raw.query.queryMany({
      platform,
      queries: [{ sql: "SELECT 1" }, { sql: narrow(limits.maxRows + 1) }, { sql: "SELECT 2" }],
    });
    assert.deepEqual(
      results.map((r) => (r.outcome.case === "result" ? r.outcome.value.rows[0]?.values[0]?.kind.value : GatewayError.fromStatus(r.outcome.value!).reason)),
      ["1", "RESULT_TOO_LARGE", "2"],
    );
  });

  it("QueryMany: with a COPY among them (run one at a time), only the query past the limit fails too", async () => {
    const { results } = await t.client().raw.query.queryMany({
      platform,
      queries: [{ sql: "SELECT 1" }, { sql: narrow(limits.maxRows + 1) }, { sql: "COPY marks FROM STDIN" }, { sql: "SELECT 2" }],
    });
    assert.deepEqual(
      results.map((r) => (r.outcome.case === "result" ? r.outcome.value.rows[0]?.values[0]?.kind.value : GatewayError.fromStatus(r.outcome.value!).reason)),
      ["1", "RESULT_TOO_LARGE", "INVALID_REQUEST", "2"],
    );
  });

  it("Transaction: a statement past the limit ends the transaction, which is rolled back", async () => {
    await db.query("TRUNCATE marks");
    await rejectsWith(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO marks VALUES (1)");
        await tx.query(narrow(limits.maxRows + 1));
      }),
      Code.ResourceExhausted,
      "RESULT_TOO_LARGE",
    );
    assert.deepEqual((await db.query("SELECT count(*)::int AS n FROM marks")).rows, [{ n: 0 }]);
  });

  it("Query: the statement is stopped on PostgreSQL at once, and its connection reset and used again", async () => {
    const marker = `cut_${randomBytes(4).toString("hex")}`;
    const database = `${platform}_main`;
    const poolOf = async () => (await t.adminClient().admin().getPoolStats(platform)).pools.find((p) => p.database === database)!;
    const before = await poolOf();
    // About 200 bytes a row, a row a millisecond: the limit is passed after half a second, the whole result would take 30 s.
    const sql = `SELECT /* ${marker} */ repeat('x', 200), pg_sleep(0.001) FROM generate_series(1, 30000)`;
    const started = Date.now();
    await rejectsWith(unary.platform(platform).query(sql, [], { timeoutMs: 10_000 }), Code.ResourceExhausted, "RESULT_TOO_LARGE");
    const admin = await t.pg();
    const running = async () =>
      (
        await admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
          [`%${marker}%`],
        )
      ).rows[0]!.n;
    await waitFor(async () => (await running()) === 0, 3_000, "the statement no longer running on PostgreSQL");
    assert.ok(Date.now() - started < 8_000, `answered in ${Date.now() - started} ms`);
    // Its backend, reset, serves the next call: no connection opened or discarded.
    assert.deepEqual((await unary.platform(platform).query("SELECT current_setting('work_mem') AS w")).rows, [{ w: "4MB" }]);
    const after = await poolOf();
    assert.equal(after.connectionsOpened, before.connectionsOpened, "no connection opened");
    assert.equal(after.connectionsDiscarded, before.connectionsDiscarded, "no connection discarded");
    assert.equal(after.busy, 0);
  });
});

describe("buffered results: the gateway's budget", () => {
  // The budget is four steps of 64 KiB; each call may buffer as much.
  const limits = { maxRows: 1_000_000, maxBytes: 256 * 1024, maxBufferedBytes: 256 * 1024 };
  let t: TestGateway;
  let platform: string;
  let unary: GatewayClient;
  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { results: limits } });
    platform = t.platforms[0]!;
    unary = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false });
  });
  after(async () => {
    unary.close();
    await t.close();
  });

  it("refuses a result that finds it taken (RESOURCE_EXHAUSTED, RESULT_MEMORY_EXHAUSTED, with a RetryInfo), never a small one, and gets every byte back", async () => {
    const db = unary.platform(platform);
    const held = () => metricValue(t, "db_gateway_buffered_result_bytes");
    // 250 KB of rows at once, then a pause of 3 s before its last row: it holds the budget meanwhile.
    const holder = db.query("SELECT repeat('x', 1000) FROM generate_series(1, 251) g WHERE g <= 250 OR pg_sleep(3) IS NOT NULL");
    await waitFor(async () => (await held()) >= 3 * 64 * 1024, 5_000, "the first result holding the budget");
    const refused = await rejectsWith(db.query("SELECT repeat('x', 1000) FROM generate_series(1, 100)"), Code.ResourceExhausted, "RESULT_MEMORY_EXHAUSTED");
    assert.equal(refused.metadata.limit, "MAX_BUFFERED_RESULT_BYTES");
    assert.match(refused.message, /try again/);
    const retry = ConnectError.from(refused.cause).findDetails(RetryInfoSchema)[0];
    assert.ok(retry?.retryDelay !== undefined, "a RetryInfo");
    // A small result is served all the same, on the SDK's usual path too.
    assert.deepEqual((await db.query("SELECT 42 AS n")).rows, [{ n: 42 }]);
    assert.deepEqual((await t.client().platform(platform).query("SELECT 43 AS n")).rows, [{ n: 43 }]);
    assert.equal((await holder).rows.length, 251);
    await waitFor(async () => (await held()) === 0, 5_000, "every byte given back");
  });
});

function batchRows(result: Awaited<ReturnType<Database["batch"]>>[number]): number {
  if (result instanceof GatewayError) throw result;
  return result.rows.length;
}
