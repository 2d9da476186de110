// Batches and transactions over the platform's QueryStream: the SDK's way once the gateway says it carries them, with every guarantee of their own calls.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import pg from "pg";
import { Code, createClient, GatewayError, type Database, type GatewayClient } from "../client-sdk/src/index.js";
import type { QueryStreamRequestSchema, QueryStreamResponse, StreamTransactionResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { callsOf, metricValue, pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { begunStream, expectKind } from "./helpers/transaction-stream.js";
import { waitFor } from "./helpers/wait.js";

const calls = (t: TestGateway, platform: string, method: string) => callsOf(t, platform, method);

type QueryResultLike = { rows: unknown[] };

describe("Batches and transactions over the SDK's QueryStream", () => {
  let t: TestGateway;
  let platform: string;
  let client: GatewayClient;
  let db: Database;
  let direct: pg.Client;
  before(async () => {
    // One connection, so that transactions one after the other share it; waiters enough for a burst of batches.
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1, acquireTimeoutMillis: 10_000, maxWaitersPerPool: 2_000 } });
    platform = t.platforms[0]!;
    client = t.client();
    db = client.platform(platform);
    await db.query("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0))");
    direct = await t.pg(`${platform}_main`);
  });
  after(() => t.close());

  const reset = async () => {
    await db.query("TRUNCATE accounts");
    await db.query("INSERT INTO accounts VALUES (1, 100), (2, 0)");
  };
  const balances = async () => (await direct.query<{ balance: number }>("SELECT balance FROM accounts ORDER BY id")).rows.map((r) => r.balance);
  /** Transaction and Batch calls the gateway has served, and QueryStream calls. */
  const callCounts = async () => ({
    Transaction: await calls(t, platform, "Transaction"),
    Batch: await calls(t, platform, "Batch"),
  });

  it("batch() and transaction() ride the open QueryStream: no Batch or Transaction call of their own", async () => {
    await reset();
    const before = await callCounts();
    // A query opens the stream; its answer comes after the gateway's first response, which says what it carries.
    await db.query("SELECT 1");
    const [batch, moved, query] = await Promise.all([
      db.batch(["UPDATE accounts SET balance = balance - 10 WHERE id = 1 RETURNING balance", "UPDATE accounts SET balance = balance + 10 WHERE id = 2"], {
        atomic: true,
      }),
      db.transaction(async (tx) => {
        await tx.query("UPDATE accounts SET balance = balance - 5 WHERE id = 1");
        await tx.query("UPDATE accounts SET balance = balance + 5 WHERE id = 2");
        return (await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM accounts")).rows[0]!.n;
      }),
      db.query<{ one: number }>("SELECT 1 AS one"),
    ]);
    assert.equal(moved, 2);
    assert.deepEqual(query.rows, [{ one: 1 }]);
    assert.ok(!(batch[0] instanceof GatewayError));
    assert.equal(batch[0]!.rows[0]!.balance, 90);
    assert.deepEqual(await balances(), [85, 15]);
    assert.deepEqual(await callCounts(), before, "nothing went as a call of its own");
  });

  it("an atomic batch over the stream: the first error throws with its statement's index and nothing commits; an independent one answers each", async () => {
    await reset();
    await db.query("SELECT 1");
    const before = await callCounts();
    const error = await db
      .batch(["UPDATE accounts SET balance = 1 WHERE id = 1", "UPDATE accounts SET balance = -1 WHERE id = 2", "SELECT 1"], { atomic: true })
      .then(() => undefined, GatewayError.from);
    assert.equal(error?.sqlstate, "23514");
    assert.equal(error?.metadata.statement_index, "1");
    assert.deepEqual(await balances(), [100, 0]);
    const results = await db.batch(["UPDATE accounts SET balance = 7 WHERE id = 1", "SELECT 1/0", "SELECT 'after'"]);
    assert.equal((results[1] as GatewayError).sqlstate, "22012");
    assert.equal(!(results[2] instanceof GatewayError) && results[2]!.rows[0]!["?column?"], "after");
    assert.deepEqual(await balances(), [7, 0]);
    assert.deepEqual(await callCounts(), before);
  });

  it("a transaction never sees what an earlier one left in its session: settings, temporary tables, advisory locks", async () => {
    await db.query("SELECT 1");
    const before = await callCounts();
    // The pool has one connection: both transactions run on it, one after the other.
    await db.transaction(async (tx) => {
      await tx.query("SET application_name = 'left behind'");
      await tx.query("SET search_path = pg_catalog");
      await tx.query("CREATE TEMP TABLE left_behind (x int)");
      await tx.query("SELECT pg_advisory_lock(42)");
    });
    const seen = await db.transaction(async (tx) => {
      const { rows } = await tx.query<{ app: string; path: string; temp: number; locks: number }>(
        `SELECT current_setting('application_name') AS app, current_setting('search_path') AS path,
                (SELECT count(*)::int FROM pg_class WHERE relname = 'left_behind') AS temp,
                (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks`,
      );
      return rows[0];
    });
    assert.deepEqual(seen, { app: "db-gateway", path: '"$user", public', temp: 0, locks: 0 });
    assert.deepEqual(await callCounts(), before);
  });

  it("a transaction's deadline over the stream rolls it back: DEADLINE_EXCEEDED, the statement cancelled, nothing committed", async () => {
    await reset();
    await db.query("SELECT 1");
    const before = await callCounts();
    const error = await db
      .transaction(
        async (tx) => {
          await tx.query("UPDATE accounts SET balance = 0 WHERE id = 1");
          await tx.query("SELECT pg_sleep(30)");
        },
        { timeoutMs: 800 },
      )
      .then(() => undefined, GatewayError.from);
    assert.equal(error?.code, Code.DeadlineExceeded);
    assert.deepEqual(await balances(), [100, 0]);
    assert.deepEqual(await callCounts(), before);
    assert.deepEqual((await db.query("SELECT 'still serving' AS s")).rows, [{ s: "still serving" }]);
  });

  it("a callback that leaves a statement running after it returns still settles: the statement is answered before the commit, or refused after it", async () => {
    await db.query("SELECT 1");
    let late: Promise<unknown> = Promise.resolve();
    const transaction = db.transaction(async (tx) => {
      late = (async () => {
        await tx.query("SELECT 1");
        await tx.query("SELECT 2");
      })();
      late.catch(() => undefined);
    });
    const outcome = await Promise.race([
      transaction.then(
        () => "settled",
        () => "settled",
      ),
      new Promise((resolve) => setTimeout(() => resolve("hung"), 5_000)),
    ]);
    assert.equal(outcome, "settled");
    const error = await late.then(() => undefined, GatewayError.from);
    assert.ok(error === undefined || error.reason === "TRANSACTION_OVER", String(error));
  });

  it("a batch burst of more than a message holds (1,000 queries and batches) is split over several messages", async () => {
    await db.query("SELECT 1");
    const before = await callCounts();
    const results = await Promise.all([
      ...Array.from({ length: 50 }, (_, i) => db.query<{ n: number }>("SELECT $1::int AS n", [i])),
      ...Array.from({ length: 1_100 }, (_, i) => db.batch([{ sql: "SELECT $1::int AS n", params: [i] }])),
    ]);
    assert.equal(results.length, 1_150);
    const last = results[1_149] as (QueryResultLike | GatewayError)[];
    assert.ok(!(last[0] instanceof GatewayError), String(last[0]));
    assert.deepEqual(last[0]!.rows, [{ n: 1_099 }]);
    assert.deepEqual(await callCounts(), before);
  });

  it("a transaction's deadline holds in the SDK too: a stream whose answers stall fails it with DEADLINE_EXCEEDED in time", async () => {
    const proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
    const stalled = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}` });
    try {
      const viaProxy = stalled.platform(platform);
      await viaProxy.query("SELECT 1");
      proxy.hold(true);
      const started = Date.now();
      const error = await viaProxy.transaction(async (tx) => void (await tx.query("SELECT 1")), { timeoutMs: 500 }).then(() => undefined, GatewayError.from);
      assert.equal(error?.code, Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 3_000, `failed after ${Date.now() - started} ms`);
    } finally {
      stalled.close();
      await proxy.close();
    }
  });

  it("a stream lost with transactions open: each fails, is rolled back, and its connection comes back clean", async () => {
    await reset();
    const proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
    const cut = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}` });
    try {
      const viaProxy = cut.platform(platform);
      await viaProxy.query("SELECT 1");
      const before = await callCounts();
      let written!: () => void;
      const inside = new Promise<void>((resolve) => (written = resolve));
      let goOn!: () => void;
      const afterCut = new Promise<void>((resolve) => (goOn = resolve));
      const transaction = viaProxy.transaction(async (tx) => {
        await tx.query("UPDATE accounts SET balance = 0 WHERE id = 1");
        written();
        await afterCut;
        await tx.query("SELECT 1"); // the stream is gone: this fails, and the callback with it
      });
      transaction.catch(() => undefined);
      await inside;
      proxy.cutAll();
      goOn();
      const error = await transaction.then(() => undefined, GatewayError.from);
      assert.equal(error?.code, Code.Unavailable);
      assert.deepEqual(await callCounts(), before, "the transaction went over the stream");
      await waitFor(async () => (await balances())[0] === 100 && (await db.query("SELECT 1")).rowCount === 1, 5_000, "the transaction rolled back");
      const { rows } = await db.query("SELECT txid_current_if_assigned() AS x");
      assert.deepEqual(rows, [{ x: null }]);
      await waitFor(async () => (await metricValue(t, "db_gateway_open_transactions")) === 0, 5_000, "no transaction open");
      await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
    } finally {
      cut.close();
      await proxy.close();
    }
  });
});

describe("Serialization failures over the SDK's QueryStream", () => {
  it("are ABORTED, and the SDK runs the transaction again, over the stream", async () => {
    const t = await startTestGateway({ platforms: 1 });
    try {
      const platform = t.platforms[0]!;
      const db = t.client().platform(platform);
      await db.query("CREATE TABLE doctors (id int PRIMARY KEY, on_call bool NOT NULL)");
      await db.query("INSERT INTO doctors VALUES (1, true), (2, true)");
      const before = await calls(t, platform, "Transaction");
      // Write skew: both read that two doctors are on call before either writes; under SERIALIZABLE one must fail with 40001.
      let attempts = 0;
      let reads = 0;
      let bothRead!: () => void;
      const barrier = new Promise<void>((resolve) => (bothRead = resolve));
      const doctor = (id: number) =>
        db.transaction(
          async (tx) => {
            attempts++;
            const { rows } = await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM doctors WHERE on_call");
            if (++reads === 2) bothRead();
            if (reads <= 2) await barrier;
            if (rows[0]!.n === 2) await tx.query("UPDATE doctors SET on_call = false WHERE id = $1", [id]);
          },
          { isolationLevel: "serializable" },
        );
      await Promise.all([doctor(1), doctor(2)]);
      assert.equal(attempts, 3, "one of the two ran again");
      assert.equal((await db.query<{ n: number }>("SELECT count(*)::int AS n FROM doctors WHERE on_call")).rows[0]!.n, 1);
      assert.equal(await calls(t, platform, "Transaction"), before, "every attempt went over the stream");
    } finally {
      await t.close();
    }
  });
});

describe("A QueryStream's transactions on the wire", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE events (id int PRIMARY KEY)");
  });
  after(() => t.close());

  /** A raw QueryStream: `send` writes a message, `next` reads the transaction answers of the next response. */
  function rawStream() {
    const client = t.client();
    const requests = createWritableIterable<MessageInitShape<typeof QueryStreamRequestSchema>>();
    const responses = client.raw.query.queryStream(requests)[Symbol.asyncIterator]();
    return {
      send: (message: MessageInitShape<typeof QueryStreamRequestSchema>) => void requests.write({ platform, ...message }).catch(() => undefined),
      async next(): Promise<QueryStreamResponse | undefined> {
        try {
          const r = await responses.next();
          return r.done ? undefined : r.value;
        } catch (err) {
          throw GatewayError.from(err);
        }
      },
      halfClose: () => requests.close(),
      close: () => client.close(),
    };
  }

  it("the first response says what the stream carries; transactions interleave, each answered in its own order", async () => {
    const s = rawStream();
    try {
      s.send({
        transactions: [
          { transaction: 1n, request: { kind: { case: "begin", value: { platform } } } },
          { transaction: 2n, request: { kind: { case: "begin", value: { platform } } } },
          { transaction: 1n, request: { kind: { case: "statement", value: { sql: "INSERT INTO events VALUES (1)" } } } },
          { transaction: 2n, request: { kind: { case: "statement", value: { sql: "INSERT INTO events VALUES (2)" } } } },
          { transaction: 1n, request: { kind: { case: "commit", value: {} } } },
          { transaction: 2n, request: { kind: { case: "rollback", value: {} } } },
        ],
      });
      const first = await s.next();
      assert.deepEqual({ batches: first?.features?.batches, transactions: first?.features?.transactions }, { batches: true, transactions: true });
      assert.equal(first?.answers.length, 0);
      const seen = new Map<bigint, string[]>([
        [1n, []],
        [2n, []],
      ]);
      const kinds = (a: StreamTransactionResponse) => (a.kind.case === "response" ? a.kind.value.kind.case! : `failed: ${a.kind.value?.message}`);
      while ([...seen.values()].reduce((n, k) => n + k.length, 0) < 6) {
        const response = await s.next();
        assert.ok(response !== undefined, "the stream goes on");
        for (const a of response.transactions) seen.get(a.transaction)!.push(kinds(a));
      }
      assert.deepEqual(seen.get(1n), ["begun", "result", "committed"]);
      assert.deepEqual(seen.get(2n), ["begun", "result", "rolledBack"]);
      const direct = await t.pg(`${platform}_main`);
      assert.deepEqual((await direct.query("SELECT id FROM events ORDER BY id")).rows, [{ id: 1 }]);
      s.halfClose();
      assert.equal(await s.next(), undefined, "the stream ends with OK");
    } finally {
      s.close();
    }
  });

  it("statements that arrive together run written at once, answered as if sent one by one: a failure aborts those behind it (25P02), and commit follows", async () => {
    const s = rawStream();
    try {
      const statement = (sql: string) => ({ transaction: 3n, request: { kind: { case: "statement" as const, value: { sql } } } });
      s.send({
        transactions: [
          { transaction: 3n, request: { kind: { case: "begin", value: { platform } } } },
          statement("INSERT INTO events VALUES (30)"),
          statement("SELECT 1/0"),
          statement("INSERT INTO events VALUES (31)"),
          { transaction: 3n, request: { kind: { case: "commit", value: {} } } },
        ],
      });
      const answers: string[] = [];
      while (answers.length < 5) {
        const response = await s.next();
        assert.ok(response !== undefined);
        for (const a of response.transactions) {
          if (a.kind.case === "failed") answers.push(`failed ${GatewayError.fromStatus(a.kind.value).reason}`);
          else if (a.kind.value?.kind.case === "error") answers.push(`error ${GatewayError.fromStatus(a.kind.value.kind.value).sqlstate}`);
          else answers.push(a.kind.value!.kind.case!);
        }
      }
      assert.deepEqual(answers, ["begun", "result", "error 22012", "error 25P02", "failed TRANSACTION_ABORTED"]);
      const direct = await t.pg(`${platform}_main`);
      assert.equal((await direct.query("SELECT 1 FROM events WHERE id IN (30, 31)")).rowCount, 0);
    } finally {
      s.close();
    }
  });

  it("the SDK sends statements issued together at once: each gets its own result, in order", async () => {
    const db = t.client().platform(platform);
    await db.query("SELECT 1");
    const before = await calls(t, platform, "Transaction");
    const ids = await db.transaction(async (tx) => {
      const inserted = await Promise.all([40, 41, 42].map((id) => tx.query<{ id: number }>("INSERT INTO events VALUES ($1) RETURNING id", [id])));
      return inserted.map((r) => r.rows[0]!.id);
    });
    assert.deepEqual(ids, [40, 41, 42]);
    const failed = await db
      .transaction(async (tx) => {
        await Promise.all([tx.query("INSERT INTO events VALUES (43)"), tx.query("INSERT INTO events VALUES (40)"), tx.query("INSERT INTO events VALUES (44)")]);
      })
      .then(() => undefined, GatewayError.from);
    assert.equal(failed?.sqlstate, "23505");
    const direct = await t.pg(`${platform}_main`);
    assert.deepEqual((await direct.query("SELECT id FROM events WHERE id >= 40 ORDER BY id")).rows, [{ id: 40 }, { id: 41 }, { id: 42 }]);
    assert.equal(await calls(t, platform, "Transaction"), before);
  });

  it("a message for a transaction not open is TRANSACTION_NOT_OPEN; a begin for a platform not the message's fails that transaction; the stream goes on", async () => {
    const s = rawStream();
    try {
      s.send({
        transactions: [
          { transaction: 5n, request: { kind: { case: "commit", value: {} } } },
          { transaction: 6n, request: { kind: { case: "begin", value: { platform: "someoneelse" } } } },
        ],
      });
      const failures: GatewayError[] = [];
      while (failures.length < 2) {
        const response = await s.next();
        assert.ok(response !== undefined);
        for (const a of response.transactions) {
          assert.equal(a.kind.case, "failed");
          if (a.kind.case === "failed") failures.push(GatewayError.fromStatus(a.kind.value));
        }
      }
      assert.deepEqual(
        failures.map((e) => [e.code, e.reason]),
        [
          [Code.FailedPrecondition, "TRANSACTION_NOT_OPEN"],
          [Code.InvalidArgument, "INVALID_REQUEST"],
        ],
      );
      s.send({ queries: [{ sql: "SELECT 'still open'" }] });
      const answer = await s.next();
      assert.equal(answer?.answers[0]?.outcome.case, "result");
    } finally {
      s.close();
    }
  });

  it("a stream that fails rolls back its open transactions, even one whose commit was read behind a running statement", async () => {
    const s = rawStream();
    const direct = await t.pg(`${platform}_main`);
    try {
      s.send({
        transactions: [
          { transaction: 9n, request: { kind: { case: "begin", value: { platform } } } },
          { transaction: 9n, request: { kind: { case: "statement", value: { sql: "INSERT INTO events SELECT 90 FROM pg_sleep(0.5)" } } } },
          { transaction: 9n, request: { kind: { case: "commit", value: {} } } },
        ],
      });
      await waitFor(
        async () =>
          (await direct.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%SELECT 90 FROM pg_sleep%' AND pid <> pg_backend_pid()")).rowCount === 1,
        5_000,
        "the insert runs",
      );
      // A begin that reuses the open transaction's number fails the stream.
      s.send({ transactions: [{ transaction: 9n, request: { kind: { case: "begin", value: { platform } } } }] });
      assert.equal((await streamFailure(s)).reason, "INVALID_REQUEST");
      await waitFor(
        async () =>
          (await direct.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle' AND pid <> pg_backend_pid()", [`${platform}_main`]))
            .rowCount === 0,
        5_000,
        "the transaction ends",
      );
      assert.equal((await direct.query("SELECT 1 FROM events WHERE id = 90")).rowCount, 0, "nothing committed");
    } finally {
      s.close();
    }
  });

  it("a stream that fails as a transaction begins: the transaction stops waiting for messages, and its connection goes back to the pool", async () => {
    const stats = async () => (await t.adminClient().admin().getPoolStats(platform)).pools.find((p) => p.database === `${platform}_main`)!;
    await t.client().platform(platform).query("SELECT 1");
    const before = await stats();
    for (let i = 0; i < 5; i++) {
      const s = rawStream();
      try {
        // The second begin reuses the number of the first, which is setting out: the stream fails before the first has read its signal.
        const begin = { transaction: 3n, request: { kind: { case: "begin" as const, value: { platform } } } };
        s.send({ transactions: [begin, begin] });
        assert.equal((await streamFailure(s)).reason, "INVALID_REQUEST");
      } finally {
        s.close();
      }
    }
    // Discarded once the cancel's grace period (2 s) was over, when the transaction went on waiting for a message that could not come.
    await waitFor(async () => (await stats()).busy === 0, 5_000, "the connection is released");
    assert.equal((await stats()).connectionsDiscarded, before.connectionsDiscarded, "no connection was discarded");
  });

  it("a transaction number above 2^53 - 1 fails the stream (INVALID_ARGUMENT): it could not be answered exactly", async () => {
    const s = rawStream();
    try {
      s.send({ transactions: [{ transaction: 2n ** 53n + 1n, request: { kind: { case: "begin", value: { platform } } } }] });
      let error: GatewayError | undefined;
      while (error === undefined)
        await s.next().then(
          (r) => assert.ok(r !== undefined, "the stream fails"),
          (err: unknown) => (error = GatewayError.from(err)),
        );
      assert.equal(error.code, Code.InvalidArgument);
    } finally {
      s.close();
    }
  });

  it("when the gateway drains, a transaction that has its commit commits, and an open one is rolled back (ROLLED_BACK_AT_SHUTDOWN)", async () => {
    const direct = await t.pg(`${platform}_main`);
    const open = await begunStream(t.client(), platform, {}, {}, "QueryStream");
    open.statement("INSERT INTO events VALUES (100)");
    await expectKind(open, "result");
    const committing = await begunStream(t.client(), platform, {}, {}, "QueryStream");
    committing.statement("INSERT INTO events SELECT 101 FROM pg_sleep(0.5)");
    committing.send({ kind: { case: "commit", value: {} } });
    await waitFor(
      async () => (await direct.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()")).rowCount === 1,
      5_000,
      "the slow insert runs",
    );
    const closing = t.gateway.close(5_000);
    await rejectsWith(open.next(), Code.Aborted, "ROLLED_BACK_AT_SHUTDOWN");
    await expectKind(committing, "result");
    await expectKind(committing, "committed");
    await closing;
    const { rows } = await direct.query<{ id: number }>("SELECT id FROM events WHERE id >= 100 ORDER BY id");
    assert.deepEqual(rows, [{ id: 101 }]);
  });
});

describe("A QueryStream's transactions and a client that does not read", () => {
  it("the gateway stops reading once maxStreamQueries transaction messages wait for the transport, and answers them all once the client reads", async () => {
    const limit = 30;
    const t = await startTestGateway({
      platforms: 1,
      overrides: { maxStreamQueries: limit },
      pool: { maxConnectionsPerPool: 40, maxTotalConnections: 60, acquireTimeoutMillis: 30_000 },
    });
    const platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE events (id int PRIMARY KEY)");
    // A proxy that stops passing the gateway's bytes on: HTTP/2 flow control then stops the gateway's writes.
    const proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}` });
    const requests = createWritableIterable<MessageInitShape<typeof QueryStreamRequestSchema>>();
    const responses = client.raw.query.queryStream(requests)[Symbol.asyncIterator]();
    const open = () => metricValue(t, "db_gateway_open_transactions");
    try {
      assert.ok((await responses.next()).value?.features?.transactions, "the gateway carries transactions");
      proxy.hold(true);
      const transactions = 60;
      for (let n = 1; n <= transactions; n++) {
        void requests
          .write({
            platform,
            transactions: [
              { transaction: BigInt(n), request: { kind: { case: "begin", value: { platform } } } },
              {
                transaction: BigInt(n),
                request: { kind: { case: "statement", value: { sql: `INSERT INTO events VALUES (${n}) RETURNING repeat('x', 100000)` } } },
              },
              { transaction: BigInt(n), request: { kind: { case: "commit", value: {} } } },
            ],
          })
          .catch(() => undefined);
      }
      // The transactions begun level off well below those sent.
      let begun = -1;
      await waitFor(
        async () => {
          await new Promise((resolve) => setTimeout(resolve, 500));
          const now = await open();
          const steady = now === begun;
          begun = now;
          return steady && now > 0;
        },
        30_000,
        "the gateway stops reading",
      );
      // Each open transaction holds two messages unanswered (its statement, whose result waits for the transport, and its commit).
      assert.ok(begun * 2 <= limit + 3, `${begun} of ${transactions} transactions begun while the client's transport took no answer`);
      proxy.hold(false);
      const committed = new Set<bigint>();
      while (committed.size < transactions) {
        const next = await responses.next();
        assert.ok(!next.done, `the stream ended after ${committed.size} commits`);
        for (const a of next.value.transactions) {
          assert.equal(a.kind.case, "response", a.kind.case === "failed" ? a.kind.value.message : undefined);
          if (a.kind.value?.kind.case === "committed") committed.add(a.transaction);
        }
      }
      const direct = await t.pg(`${platform}_main`);
      assert.equal((await direct.query("SELECT 1 FROM events")).rowCount, transactions);
      requests.close();
      // Nothing left open: no transaction, no connection busy; the gateway serves a normal call.
      await waitFor(async () => (await open()) === 0, 5_000, "no transaction open");
      await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
      assert.deepEqual((await t.client().platform(platform).query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    } finally {
      client.close();
      await proxy.close();
      await t.close();
    }
  });
});

describe("A QueryStream transaction's statements issued together reach PostgreSQL in one write", () => {
  let proxy: FaultProxy;
  let t: TestGateway;
  let platform: string;
  before(async () => {
    const target = new URL(pgUrl());
    proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    t = await startTestGateway({ platforms: 1, databaseUrl: proxy.url(pgUrl()) });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE marks (id int PRIMARY KEY)");
  });
  after(async () => {
    await t.close();
    await proxy.close();
  });

  /** Whether one chunk the gateway wrote to PostgreSQL holds every one of `texts`. */
  const together = (...texts: string[]) => proxy.sent.some((chunk) => texts.every((text) => chunk.includes(text)));

  it("the SDK's statements issued together (Promise.all) go in one write, BEGIN with them; statements awaited one by one do not", async () => {
    const db = t.client().platform(platform);
    await db.query("SELECT 1");
    proxy.record(true);
    await db.transaction(async (tx) => {
      await Promise.all([1, 2, 3].map((id) => tx.query(`INSERT INTO marks VALUES (${id}) /* together ${id} */`)));
    });
    assert.ok(together("BEGIN", "together 1", "together 2", "together 3"), "BEGIN and the three inserts in one write");
    proxy.record(true);
    await db.transaction(async (tx) => {
      for (const id of [4, 5, 6]) await tx.query(`INSERT INTO marks VALUES (${id}) /* apart ${id} */`);
    });
    assert.ok(!together("apart 4", "apart 5") && !together("apart 5", "apart 6"), "statements awaited one by one leave one by one");
    proxy.record(false);
    assert.equal((await db.query("SELECT 1 FROM marks")).rowCount, 6);
  });
});

/** The error a raw stream fails with, reading past whatever it answered before. */
async function streamFailure(s: { next(): Promise<unknown> }): Promise<GatewayError> {
  for (;;) {
    const failed = await s.next().then(
      (r) => (assert.ok(r !== undefined, "the stream fails"), undefined),
      (err: unknown) => GatewayError.from(err),
    );
    if (failed !== undefined) return failed;
  }
}
