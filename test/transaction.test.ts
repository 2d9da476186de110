// Transaction streams: commit, rollback, failed statements, cut clients, isolation, serialization failures, idle timeouts, unknown commits.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import pg from "pg";
import { IsolationLevel, TransactionRequestSchema, type TransactionResponse } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, createClient, GatewayError, type Database, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { pgUrl, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

type Request = MessageInitShape<typeof TransactionRequestSchema>;

/** A Transaction stream driven message by message, as a client library would. */
function openStream(client: GatewayClient, platform: string, options: { timeoutMs?: number } = {}) {
  const requests = createWritableIterable<Request>();
  const abort = new AbortController();
  const responses = client.raw.query.transaction(requests, { signal: abort.signal, timeoutMs: options.timeoutMs })[Symbol.asyncIterator]();
  const send = (request: Request) => void requests.write(create(TransactionRequestSchema, request)).catch(() => undefined);
  return {
    send,
    begin: (value: Extract<Request["kind"], { case: "begin" }>["value"] = {}) => send({ kind: { case: "begin", value: { platform, ...value } } }),
    statement: (sql: string) => send({ kind: { case: "statement", value: { sql } } }),
    /** The next response; throws the call's error as a GatewayError. */
    async next(): Promise<TransactionResponse["kind"] | "end"> {
      try {
        const r = await responses.next();
        return r.done ? "end" : r.value.kind;
      } catch (err) {
        throw GatewayError.from(err);
      }
    },
    halfClose: () => requests.close(),
    cancel: () => abort.abort(),
  };
}

async function expectKind(stream: ReturnType<typeof openStream>, kind: string): Promise<TransactionResponse["kind"]> {
  const answer = await stream.next();
  assert.notEqual(answer, "end", `expected ${kind}, the stream ended`);
  if (answer === "end") throw new Error("unreachable");
  assert.equal(answer.case, kind, answer.case === "error" ? answer.value.message : undefined);
  return answer;
}

/** Reads the next answer, which must be an error with the given SQLSTATE. */
async function expectSqlstate(stream: ReturnType<typeof openStream>, sqlstate: string): Promise<void> {
  const answer = await expectKind(stream, "error");
  assert.equal(answer.case === "error" && GatewayError.fromStatus(answer.value).sqlstate, sqlstate);
}

/** A Transaction stream whose BEGIN has been answered. */
async function begunStream(
  client: GatewayClient,
  platform: string,
  begin: Parameters<ReturnType<typeof openStream>["begin"]>[0] = {},
  options: { timeoutMs?: number } = {},
) {
  const s = openStream(client, platform, options);
  s.begin(begin);
  await expectKind(s, "begun");
  return s;
}

describe("Transaction streams", () => {
  let t: TestGateway;
  let platform: string;
  let db: Database;
  let direct: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1, acquireTimeoutMillis: 10_000 } });
    platform = t.platforms[0]!;
    db = t.client().platform(platform);
    await db.query("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0))");
    direct = await t.pg(`${platform}_main`);
  });
  after(() => t.close());

  const reset = async () => {
    await db.query("TRUNCATE accounts");
    await db.query("INSERT INTO accounts VALUES (1, 100), (2, 0)");
  };
  const balances = async () => (await direct.query<{ id: number; balance: number }>("SELECT id, balance FROM accounts ORDER BY id")).rows.map((r) => r.balance);

  /** Nothing of the gateway's on this database is in a transaction or running, and row 1 can be locked at once. */
  async function assertReleased(): Promise<void> {
    await waitFor(
      async () =>
        (
          await direct.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'db-gateway' AND datname = $1 AND state <> 'idle' AND pid <> pg_backend_pid()",
            [`${platform}_main`],
          )
        ).rowCount === 0,
      5_000,
      "the gateway's connection idle outside any transaction",
    );
    await direct.query("BEGIN");
    try {
      await direct.query("SET LOCAL lock_timeout = '2s'");
      await direct.query("SELECT * FROM accounts WHERE id = 1 FOR UPDATE");
    } finally {
      await direct.query("ROLLBACK");
    }
    const { rows } = await db.query("SELECT txid_current_if_assigned() AS x, current_setting('transaction_isolation') AS iso");
    assert.deepEqual(rows, [{ x: null, iso: "read committed" }], "the pooled connection came back clean");
  }

  it("commits: statements run on one connection, in order, and are answered one by one", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("UPDATE accounts SET balance = balance - 30 WHERE id = 1");
    const update = await expectKind(s, "result");
    assert.equal(update.case === "result" && update.value.rowsAffected, 1n);
    s.statement("UPDATE accounts SET balance = balance + 30 WHERE id = 2");
    await expectKind(s, "result");
    assert.deepEqual(await balances(), [100, 0], "not visible before commit");
    s.send({ kind: { case: "commit", value: {} } });
    await expectKind(s, "committed");
    assert.equal(await s.next(), "end");
    assert.deepEqual(await balances(), [70, 30]);
  });

  it("rolls back on request", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("UPDATE accounts SET balance = 0 WHERE id = 1");
    await expectKind(s, "result");
    s.send({ kind: { case: "rollback", value: {} } });
    await expectKind(s, "rolledBack");
    assert.equal(await s.next(), "end");
    assert.deepEqual(await balances(), [100, 0]);
  });

  for (const step of ["after BEGIN", "after a write", "before COMMIT"] as const) {
    for (const cut of ["cancels", "disconnects", "half-closes without committing"] as const) {
      it(`the client ${cut} ${step}: nothing commits, the lock is released, the connection comes back clean`, async () => {
        await reset();
        // A disconnect is a real one: the TCP connection between client and gateway is cut.
        const proxy = await startFaultProxy({ host: "127.0.0.1", port: t.port });
        const client = createClient({ ...t.clientOptions(t.keys[platform]!), url: `https://localhost:${proxy.port}` });
        const s = await begunStream(client, platform, { options: { isolationLevel: IsolationLevel.SERIALIZABLE } });
        if (step !== "after BEGIN") {
          s.statement("UPDATE accounts SET balance = balance - 50 WHERE id = 1");
          await expectKind(s, "result");
        }
        if (step === "before COMMIT") {
          s.statement("UPDATE accounts SET balance = balance + 50 WHERE id = 2");
          await expectKind(s, "result");
        }
        if (cut === "cancels") s.cancel();
        else if (cut === "disconnects") proxy.cutAll();
        else {
          s.halfClose();
          await expectKind(s, "rolledBack");
          assert.equal(await s.next(), "end");
        }
        await assertReleased();
        assert.deepEqual(await balances(), [100, 0]);
        client.close();
        await proxy.close();
      });
    }
  }

  it("a failed statement is answered with its error and the stream stays open; ROLLBACK TO SAVEPOINT recovers", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("UPDATE accounts SET balance = balance - 10 WHERE id = 1");
    await expectKind(s, "result");
    s.statement("SAVEPOINT before_overdraft");
    await expectKind(s, "result");
    s.statement("UPDATE accounts SET balance = balance - 1000 WHERE id = 2");
    const failed = await expectKind(s, "error");
    const error = failed.case === "error" ? GatewayError.fromStatus(failed.value) : undefined;
    assert.equal(error?.code, Code.FailedPrecondition);
    assert.equal(error?.sqlstate, "23514");
    assert.equal(error?.postgres?.constraintName, "accounts_balance_check");
    s.statement("ROLLBACK TO SAVEPOINT before_overdraft");
    await expectKind(s, "result");
    s.send({ kind: { case: "commit", value: {} } });
    await expectKind(s, "committed");
    assert.deepEqual(await balances(), [90, 0]);
  });

  it("COMMIT of a transaction whose statement failed is FAILED_PRECONDITION (TRANSACTION_ABORTED), and nothing commits", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("UPDATE accounts SET balance = 1 WHERE id = 1");
    await expectKind(s, "result");
    s.statement("SELECT 1/0");
    await expectKind(s, "error");
    s.statement("SELECT 1");
    await expectSqlstate(s, "25P02");
    s.send({ kind: { case: "commit", value: {} } });
    await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ABORTED");
    await assertReleased();
    assert.deepEqual(await balances(), [100, 0]);
  });

  it("BEGIN goes with the first statement: a first statement that fails leaves the transaction aborted, never autocommitting what follows", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("SELECT 1/0");
    await expectSqlstate(s, "22012");
    s.statement("UPDATE accounts SET balance = 1 WHERE id = 1");
    await expectSqlstate(s, "25P02");
    s.send({ kind: { case: "commit", value: {} } });
    await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ABORTED");
    await assertReleased();
    assert.deepEqual(await balances(), [100, 0]);
  });

  for (const end of ["commit", "rollback"] as const) {
    it(`a transaction with no statement ends at once on ${end}, and its connection goes back clean`, async () => {
      const s = await begunStream(t.client(), platform, { options: { isolationLevel: IsolationLevel.SERIALIZABLE } });
      s.send({ kind: { case: end, value: {} } });
      await expectKind(s, end === "commit" ? "committed" : "rolledBack");
      assert.equal(await s.next(), "end");
      await assertReleased();
    });
  }

  it("a statement that ends the transaction itself fails the stream (TRANSACTION_ENDED_BY_STATEMENT)", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("ROLLBACK");
    await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
    await assertReleased();
  });

  it("COMMIT AND CHAIN inside the stream fails it: what came after it is not committed", async () => {
    await reset();
    const s = await begunStream(t.client(), platform);
    s.statement("UPDATE accounts SET balance = 1 WHERE id = 1");
    await expectKind(s, "result");
    s.statement("COMMIT AND CHAIN");
    await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
    await assertReleased();
    assert.deepEqual(await balances(), [1, 0], "the statement's own COMMIT stands; nothing more was committed");
  });

  it("applies isolation level, read only and deferrable", async () => {
    const s = await begunStream(t.client(), platform, { options: { isolationLevel: IsolationLevel.SERIALIZABLE, readOnly: true, deferrable: true } });
    s.statement(
      "SELECT current_setting('transaction_isolation') || ' ' || current_setting('transaction_read_only') || ' ' || current_setting('transaction_deferrable')",
    );
    const r = await expectKind(s, "result");
    assert.equal(r.case === "result" && r.value.rows[0]!.values[0]!.kind.value, "serializable on on");
    s.statement("UPDATE accounts SET balance = 0");
    await expectSqlstate(s, "25006");
    s.send({ kind: { case: "rollback", value: {} } });
    await expectKind(s, "rolledBack");
  });

  it("rejects a stream that does not begin with begin, and a second begin", async () => {
    const s = openStream(t.client(), platform);
    s.statement("SELECT 1");
    await rejectsWith(s.next(), Code.InvalidArgument, "INVALID_REQUEST");
    const s2 = await begunStream(t.client(), platform);
    s2.begin();
    await rejectsWith(s2.next(), Code.InvalidArgument, "INVALID_REQUEST");
    await assertReleased();
  });

  it("the call's deadline ends a running transaction: the statement is cancelled and the transaction rolled back", async () => {
    await reset();
    const s = await begunStream(t.client(), platform, {}, { timeoutMs: 1_000 });
    s.statement("UPDATE accounts SET balance = 0 WHERE id = 1");
    await expectKind(s, "result");
    s.statement("SELECT pg_sleep(30)");
    const err = await s.next().then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    await assertReleased();
    assert.deepEqual(await balances(), [100, 0]);
  });

  describe("through the SDK", () => {
    it("transaction() commits what the callback did and returns its value", async () => {
      await reset();
      const moved = await db.transaction(async (tx) => {
        await tx.query("UPDATE accounts SET balance = balance - $1 WHERE id = 1", [25]);
        await tx.query("UPDATE accounts SET balance = balance + $1 WHERE id = 2", [25]);
        return (await tx.query<{ balance: number }>("SELECT balance FROM accounts WHERE id = 2")).rows[0]!.balance;
      });
      assert.equal(moved, 25);
      assert.deepEqual(await balances(), [75, 25]);
    });

    it("transaction() rolls back when the callback throws, and rethrows its error", async () => {
      await reset();
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query("UPDATE accounts SET balance = 0 WHERE id = 1");
          throw new Error("changed my mind");
        }),
        /changed my mind/,
      );
      assert.deepEqual(await balances(), [100, 0]);
      await assertReleased();
    });

    it("transaction() sends its first statement with the begin: a begin that fails fails the transaction, even when the callback catches the error", async () => {
      const missing = t.client().platform(platform).tenant("no_such_tenant");
      let seen: unknown;
      const err = await missing
        .transaction(async (tx) => {
          seen = await tx.query("SELECT 1").catch((e: unknown) => e);
          return "carried on";
        })
        .then(() => undefined, GatewayError.from);
      assert.equal(err?.code, Code.NotFound);
      assert.equal(GatewayError.from(seen).code, Code.NotFound);
      // A callback that throws before the gateway has answered the begin: its own error, and nothing is left behind.
      await assert.rejects(
        db.transaction(async () => {
          throw new Error("before any statement");
        }),
        /before any statement/,
      );
      await assertReleased();
    });
  });
});

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

  it("a transaction left idle past the timeout is rolled back: ABORTED, reason TRANSACTION_IDLE_TIMEOUT", async () => {
    const s = await begunStream(t.client(), t.platforms[0]!);
    s.statement("INSERT INTO events VALUES (1)");
    await expectKind(s, "result");
    await new Promise((r) => setTimeout(r, 800));
    await rejectsWith(s.next(), Code.Aborted, "TRANSACTION_IDLE_TIMEOUT");
    assert.equal(await count(), 0);
  });

  for (const fault of ["forward-then-cut", "cut"] as const) {
    const what = fault === "cut" ? "before it reached PostgreSQL" : "after PostgreSQL received it";
    it(`the link to PostgreSQL breaking ${what} is UNAVAILABLE with reason COMMIT_OUTCOME_UNKNOWN, never OK or ABORTED`, async () => {
      const before = await count();
      const s = await begunStream(t.client(), t.platforms[0]!);
      s.statement(`INSERT INTO events VALUES (${100 + before})`);
      await expectKind(s, "result");
      proxy.arm("COMMIT\0", fault);
      s.send({ kind: { case: "commit", value: {} } });
      await rejectsWith(s.next(), Code.Unavailable, "COMMIT_OUTCOME_UNKNOWN");
      assert.ok(proxy.tripped);
      // What really happened: committed when PostgreSQL got the COMMIT, not when it did not.
      await waitFor(
        async () =>
          (await direct.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle' AND pid <> pg_backend_pid()", [`${t.platforms[0]}_main`]))
            .rowCount === 0,
        5_000,
        "settled",
      );
      assert.equal(await count(), fault === "cut" ? before : before + 1);
      // The gateway carries on with a new connection.
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

  it("is UNAVAILABLE with reason COMMIT_OUTCOME_UNKNOWN; the COMMIT is not cancelled, and commits", async () => {
    const err = await db
      .batch([{ sql: "UPDATE accounts SET balance = $1 WHERE id = 1", params: [7] }], { atomic: true })
      .then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.Unavailable);
    assert.equal(err?.reason, "COMMIT_OUTCOME_UNKNOWN");
    await waitFor(
      async () => (await db.query<{ balance: number }>("SELECT balance FROM accounts WHERE id = 1")).rows[0]!.balance === 7,
      5_000,
      "the COMMIT to finish",
    );
  });
});
