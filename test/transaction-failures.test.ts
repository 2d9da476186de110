// Transactions that fail: serialization failures (ABORTED, retried by the SDK), idle timeouts, a COMMIT whose outcome is unknown, a deadline while COMMIT runs.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, GatewayError, type Database } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { waitFor } from "./helpers/wait.js";
import { begunStream, expectKind, TRANSPORTS } from "./helpers/transaction-stream.js";

describe("Transaction: serialization failures are ABORTED and retryable", () => {
  let t: TestGateway;
  let db: Database;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE doctors (id int PRIMARY KEY, on_call bool NOT NULL)");
  });
  after(() => t.close());

  /**
   * Write skew: each transaction reads how many doctors are on call and, if
   * two are, takes itself off. Both read before either writes, so under
   * SERIALIZABLE one of them must fail with 40001.
   */
  async function writeSkew(maxAttempts: number): Promise<{ results: PromiseSettledResult<unknown>[]; attempts: number }> {
    await db.query("TRUNCATE doctors");
    await db.query("INSERT INTO doctors VALUES (1, true), (2, true)");
    let attempts = 0;
    let bothRead!: () => void;
    const barrier = new Promise<void>((resolve) => {
      let n = 0;
      bothRead = () => ++n === 2 && resolve();
    });
    const doctor = (id: number) =>
      db.transaction(
        async (tx) => {
          attempts++;
          const { rows } = await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM doctors WHERE on_call");
          if (attempts <= 2) {
            bothRead();
            await barrier;
          }
          if (rows[0]!.n >= 2) await tx.query("UPDATE doctors SET on_call = false WHERE id = $1", [id]);
        },
        { isolationLevel: "serializable", maxAttempts },
      );
    const results = await Promise.allSettled([doctor(1), doctor(2)]);
    return { results, attempts };
  }

  it("40001 reaches the client as ABORTED with reason TRANSACTION_CONFLICT and the SQLSTATE", async () => {
    const { results } = await writeSkew(1);
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(failures.length, 1, JSON.stringify(results));
    const err = GatewayError.from(failures[0]!.reason);
    assert.equal(err.code, Code.Aborted);
    assert.equal(err.reason, "TRANSACTION_CONFLICT");
    assert.equal(err.sqlstate, "40001");
    const { rows } = await db.query("SELECT count(*)::int AS n FROM doctors WHERE on_call");
    assert.deepEqual(rows, [{ n: 1 }]);
  });

  it("a deadlock (40P01) is ABORTED with reason TRANSACTION_CONFLICT too", async () => {
    await db.query("TRUNCATE doctors");
    await db.query("INSERT INTO doctors VALUES (1, true), (2, true)");
    let locked!: () => void;
    const bothLocked = new Promise<void>((resolve) => {
      let n = 0;
      locked = () => ++n === 2 && resolve();
    });
    const crossing = (first: number, second: number) =>
      db.transaction(
        async (tx) => {
          await tx.query("UPDATE doctors SET on_call = false WHERE id = $1", [first]);
          locked();
          await bothLocked;
          await tx.query("UPDATE doctors SET on_call = false WHERE id = $1", [second]);
        },
        { maxAttempts: 1 },
      );
    const results = await Promise.allSettled([crossing(1, 2), crossing(2, 1)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.code, Code.Aborted);
    assert.equal(failed[0]!.reason, "TRANSACTION_CONFLICT");
    assert.equal(failed[0]!.sqlstate, "40P01");
  });

  it("a client-side retry of the whole transaction succeeds", async () => {
    const { results, attempts } = await writeSkew(3);
    assert.deepEqual(
      results.map((r) => r.status),
      ["fulfilled", "fulfilled"],
    );
    assert.equal(attempts, 3, "one of the two callbacks ran again");
    const { rows } = await db.query("SELECT count(*)::int AS n FROM doctors WHERE on_call");
    assert.deepEqual(rows, [{ n: 1 }], "the invariant held: one doctor still on call");
  });
});

describe("Transaction: idle timeout and the unknown outcome of COMMIT", () => {
  let proxy: FaultProxy;
  let t: TestGateway;
  let db: Database;
  let direct: pg.Client;
  before(async () => {
    const target = new URL(pgUrl());
    proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    t = await startTestGateway({ platforms: 1, databaseUrl: proxy.url(pgUrl()), overrides: { transactionIdleTimeoutMillis: 500 } });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE events (id int PRIMARY KEY)");
    direct = await t.pg(`${t.platforms[0]}_main`);
  });
  after(async () => {
    await t.close();
    await proxy.close();
  });

  const count = async () => (await direct.query<{ n: number }>("SELECT count(*)::int AS n FROM events")).rows[0]!.n;

  for (const transport of TRANSPORTS)
    it(`a transaction left idle past the timeout is rolled back: ABORTED, reason TRANSACTION_IDLE_TIMEOUT (over a ${transport})`, async () => {
      const s = await begunStream(t.client(), t.platforms[0]!, {}, {}, transport);
      s.statement("INSERT INTO events VALUES (1)");
      await expectKind(s, "result");
      await new Promise((r) => setTimeout(r, 800));
      await rejectsWith(s.next(), Code.Aborted, "TRANSACTION_IDLE_TIMEOUT");
      assert.equal(await count(), 0);
      await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
    });

  for (const transport of TRANSPORTS)
    for (const fault of ["forward-then-cut", "cut"] as const) {
      const what = fault === "cut" ? "before it reached PostgreSQL" : "after PostgreSQL received it";
      it(`the link to PostgreSQL breaking ${what} is UNAVAILABLE with reason COMMIT_OUTCOME_UNKNOWN, never OK or ABORTED (over a ${transport})`, async () => {
        const before = await count();
        const s = await begunStream(t.client(), t.platforms[0]!, {}, {}, transport);
        s.statement(`INSERT INTO events VALUES (${100 + before})`);
        await expectKind(s, "result");
        proxy.arm("COMMIT\0", fault);
        s.send({ kind: { case: "commit", value: {} } });
        await rejectsWith(s.next(), Code.Unavailable, "COMMIT_OUTCOME_UNKNOWN");
        assert.ok(proxy.tripped);
        // What really happened: committed when PostgreSQL got the COMMIT, not when it did not.
        await waitFor(
          async () =>
            (
              await direct.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle' AND pid <> pg_backend_pid()", [
                `${t.platforms[0]}_main`,
              ])
            ).rowCount === 0,
          5_000,
          "settled",
        );
        assert.equal(await count(), fault === "cut" ? before : before + 1);
        // The cut connection is out of the pool, and its backend gone with it; the gateway carries on with a new connection.
        await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
        assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
      });
    }

  it("through the SDK, a commit whose outcome is unknown is reported as such and not retried", async () => {
    let runs = 0;
    proxy.arm("COMMIT\0", "forward-then-cut");
    const err = await db
      .transaction(async (tx) => {
        runs++;
        await tx.query("INSERT INTO events VALUES (500)");
      })
      .then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.Unavailable);
    assert.equal(err?.reason, "COMMIT_OUTCOME_UNKNOWN");
    assert.equal(runs, 1);
    // PostgreSQL got the COMMIT: the row is there, once, and nothing is left behind.
    await waitFor(async () => (await direct.query("SELECT 1 FROM events WHERE id = 500")).rowCount === 1, 5_000, "the commit");
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
    assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
  });
});

describe("A deadline while COMMIT runs", () => {
  let t: TestGateway;
  let db: Database;
  before(async () => {
    // The gateway's own limit on a statement (here 400 ms) is what passes: the client sets no deadline, so it hears the gateway's answer.
    t = await startTestGateway({ platforms: 1, overrides: { maxStatementMillis: 400 } });
    db = t.client().platform(t.platforms[0]!);
    await db.query("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)");
    await db.query("INSERT INTO accounts VALUES (1, 100)");
    // A deferred constraint trigger runs at COMMIT: this one makes COMMIT last a second.
    await db.query("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$");
    await db.query("CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON accounts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()");
  });
  after(() => t.close());

  it("an atomic batch that returns rows: UNAVAILABLE with reason COMMIT_OUTCOME_UNKNOWN; the COMMIT is not cancelled, and commits", async () => {
    const err = await db
      .batch([{ sql: "UPDATE accounts SET balance = $1 WHERE id = 1 RETURNING balance", params: [7] }], { atomic: true })
      .then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.Unavailable);
    assert.equal(err?.reason, "COMMIT_OUTCOME_UNKNOWN");
    await waitFor(
      async () => (await db.query<{ balance: number }>("SELECT balance FROM accounts WHERE id = 1")).rows[0]!.balance === 7,
      5_000,
      "the COMMIT to finish",
    );
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });

  it("an atomic batch of writes whose client deadline passes while its COMMIT runs: the SDK waits for the gateway's answer, which says it committed", async () => {
    const [result] = await db.batch([{ sql: "UPDATE accounts SET balance = $1 WHERE id = 1", params: [9] }], { atomic: true, timeoutMs: 300 });
    assert.ok(!(result instanceof GatewayError));
    assert.equal(result!.rowCount, 1);
    assert.equal((await db.query<{ balance: number }>("SELECT balance FROM accounts WHERE id = 1")).rows[0]!.balance, 9);
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });

  it("an atomic batch of writes (COMMIT sent with them): the COMMIT is not cancelled, and the answer says it committed", async () => {
    const [result] = await db.batch([{ sql: "UPDATE accounts SET balance = $1 WHERE id = 1", params: [8] }], { atomic: true });
    assert.ok(!(result instanceof GatewayError));
    assert.equal(result!.rowCount, 1);
    assert.equal((await db.query<{ balance: number }>("SELECT balance FROM accounts WHERE id = 1")).rows[0]!.balance, 8);
    await assertNoLeftovers(t, pgUrl(), `${t.platforms[0]}_main`);
  });
});
