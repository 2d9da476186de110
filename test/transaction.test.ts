// Transaction streams: commit, rollback, failed statements, cut clients, isolation and savepoints, message by message.
import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import pg from "pg";
import { IsolationLevel } from "../wire/src/gen/dbgateway/v1/query_service_pb.js";
import { Code, createClient, GatewayError, type Database, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startFaultProxy } from "./helpers/fault-proxy.js";
import { callsOf, metricValue, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { waitFor } from "./helpers/wait.js";
import { begunStream, expectKind, expectSqlstate, openStream, TRANSPORTS } from "./helpers/transaction-stream.js";

for (const transport of TRANSPORTS)
  describe(`Transactions over a ${transport}`, () => {
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
    const balances = async () =>
      (await direct.query<{ id: number; balance: number }>("SELECT id, balance FROM accounts ORDER BY id")).rows.map((r) => r.balance);

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
      // The gateway counts no transaction open, and PostgreSQL has only the pool's connections.
      await waitFor(async () => (await metricValue(t, "db_gateway_open_transactions")) === 0, 5_000, "no transaction open");
      await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
    }

    it("commits: statements run on one connection, in order, and are answered one by one", async () => {
      await reset();
      const s = await begunStream(t.client(), platform, {}, {}, transport);
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
      const s = await begunStream(t.client(), platform, {}, {}, transport);
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
          const s = await begunStream(client, platform, { options: { isolationLevel: IsolationLevel.SERIALIZABLE } }, {}, transport);
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
      const s = await begunStream(t.client(), platform, {}, {}, transport);
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
      const s = await begunStream(t.client(), platform, {}, {}, transport);
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
      const s = await begunStream(t.client(), platform, {}, {}, transport);
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
        const s = await begunStream(t.client(), platform, { options: { isolationLevel: IsolationLevel.SERIALIZABLE } }, {}, transport);
        s.send({ kind: { case: end, value: {} } });
        await expectKind(s, end === "commit" ? "committed" : "rolledBack");
        assert.equal(await s.next(), "end");
        await assertReleased();
      });
    }

    it("a statement that ends the transaction itself fails the stream (TRANSACTION_ENDED_BY_STATEMENT)", async () => {
      await reset();
      const s = await begunStream(t.client(), platform, {}, {}, transport);
      s.statement("ROLLBACK");
      await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
      await assertReleased();
    });

    it("COMMIT AND CHAIN inside the stream fails it: what came after it is not committed", async () => {
      await reset();
      const s = await begunStream(t.client(), platform, {}, {}, transport);
      s.statement("UPDATE accounts SET balance = 1 WHERE id = 1");
      await expectKind(s, "result");
      s.statement("COMMIT AND CHAIN");
      await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_ENDED_BY_STATEMENT");
      await assertReleased();
      assert.deepEqual(await balances(), [1, 0], "the statement's own COMMIT stands; nothing more was committed");
    });

    it("applies isolation level, read only and deferrable", async () => {
      const s = await begunStream(
        t.client(),
        platform,
        { options: { isolationLevel: IsolationLevel.SERIALIZABLE, readOnly: true, deferrable: true } },
        {},
        transport,
      );
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

    it("rejects a transaction that does not begin with begin, and a second begin", async () => {
      const s = openStream(t.client(), platform, {}, transport);
      s.statement("SELECT 1");
      // On a QueryStream, a message for a transaction never begun is answered on its own, and the stream goes on.
      if (transport === "QueryStream") await rejectsWith(s.next(), Code.FailedPrecondition, "TRANSACTION_NOT_OPEN");
      else await rejectsWith(s.next(), Code.InvalidArgument, "INVALID_REQUEST");
      const s2 = await begunStream(t.client(), platform, {}, {}, transport);
      s2.begin();
      await rejectsWith(s2.next(), Code.InvalidArgument, "INVALID_REQUEST");
      await assertReleased();
    });

    it("the call's deadline ends a running transaction: the statement is cancelled and the transaction rolled back", async () => {
      await reset();
      const s = await begunStream(t.client(), platform, {}, { timeoutMs: 1_000 }, transport);
      s.statement("UPDATE accounts SET balance = 0 WHERE id = 1");
      await expectKind(s, "result");
      s.statement("SELECT pg_sleep(30)");
      const err = await s.next().then(() => undefined, GatewayError.from);
      assert.equal(err?.code, Code.DeadlineExceeded);
      await assertReleased();
      assert.deepEqual(await balances(), [100, 0]);
    });

    describe("through the SDK", () => {
      /** The SDK's way for this transport: a client without QueryStream makes Transaction calls; one whose stream is open sends transactions over it. */
      let sdk: GatewayClient;
      let viaSdk: ReturnType<GatewayClient["platform"]>;
      before(async () => {
        sdk = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: transport === "QueryStream" });
        viaSdk = sdk.platform(platform);
      });
      after(() => sdk.close());
      beforeEach(async () => {
        await viaSdk.query("SELECT 1"); // opens the stream, which says it carries transactions
      });
      afterEach(async () => {
        const calls = await callsOf(t, platform, "Transaction");
        if (transport === "QueryStream") assert.equal(calls, transactionCalls, "the SDK's transactions went over its QueryStream");
        else assert.ok(calls > transactionCalls, "the SDK's transactions were Transaction calls");
        transactionCalls = calls;
      });
      let transactionCalls = 0;
      before(async () => {
        transactionCalls = await callsOf(t, platform, "Transaction");
      });

      it("transaction() commits what the callback did and returns its value", async () => {
        await reset();
        const moved = await viaSdk.transaction(async (tx) => {
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
          viaSdk.transaction(async (tx) => {
            await tx.query("UPDATE accounts SET balance = 0 WHERE id = 1");
            throw new Error("changed my mind");
          }),
          /changed my mind/,
        );
        assert.deepEqual(await balances(), [100, 0]);
        await assertReleased();
      });

      it("transaction() sends its first statement with the begin: a begin that fails fails the transaction, even when the callback catches the error", async () => {
        const missing = viaSdk.tenant("no_such_tenant");
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
          viaSdk.transaction(async () => {
            throw new Error("before any statement");
          }),
          /before any statement/,
        );
        await assertReleased();
      });
    });
  });
