// Recovery without a gateway restart: PostgreSQL restarted under reads and writes, and backends terminated (idle or mid-transaction) or stopped.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres.js";
import { begunStream, expectKind, TRANSPORTS } from "./helpers/transaction-stream.js";
import { waitFor } from "./helpers/wait.js";

async function busyConnections(t: TestGateway, database: string): Promise<number | undefined> {
  const admin = t.adminClient();
  try {
    return (await admin.raw.admin.getPoolStats({})).pools.find((p) => p.database === database)?.busy;
  } finally {
    admin.close();
  }
}

describe("recovery: PostgreSQL restarted under load", () => {
  let server: OwnPostgres;
  let t: TestGateway;
  before(async () => {
    // A PostgreSQL of this test's own, since it is stopped and started.
    server = await startOwnPostgres();
    t = await startTestGateway({ platforms: 1, databaseUrl: server.url, pool: { acquireTimeoutMillis: 1_000 } });
  });
  after(async () => {
    await t.close();
    await server.close();
  });

  it("calls fail with UNAVAILABLE while the server is down and succeed again after, without a gateway restart; no acknowledged write is lost, none refused unsent is applied, nothing is left behind", async () => {
    const platform = t.platforms[0]!;
    const db = t.client().platform(platform);
    await db.query("CREATE TABLE writes (id int PRIMARY KEY)");
    // Writes through a client that does not retry, so that each call's own outcome is seen.
    const writerClient = createClient({ ...t.clientOptions(t.keys[platform]!), retry: { maxAttempts: 1 } });
    const writer = writerClient.platform(platform);
    const outcomes: string[] = [];
    const writes: { id: number; error?: GatewayError }[] = [];
    let running = true;
    const describeError = (err: unknown) => {
      const e = GatewayError.from(err);
      return `${Code[e.code]}/${e.reason}`;
    };
    const reads = (async () => {
      while (running) {
        try {
          await db.query("SELECT 1", [], { timeoutMs: 3_000 });
          outcomes.push("ok");
        } catch (err) {
          outcomes.push(describeError(err));
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const writing = (async () => {
      for (let id = 1; running; id++) {
        const write: (typeof writes)[number] = { id };
        writes.push(write);
        try {
          await writer.query("INSERT INTO writes VALUES ($1)", [id], { timeoutMs: 3_000 });
        } catch (err) {
          write.error = GatewayError.from(err);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await waitFor(() => outcomes.length >= 5 && writes.length >= 5, 5_000, "calls before the stop");
    await server.stop();
    const stoppedAt = outcomes.length;
    await waitFor(() => outcomes.length >= stoppedAt + 5, 10_000, "calls while down");
    await server.start();
    const restartedAt = outcomes.length;
    await waitFor(() => outcomes.slice(restartedAt).includes("ok") && writes.slice(-3).every((w) => w.error === undefined), 15_000, "calls after the restart");
    running = false;
    await Promise.all([reads, writing]);
    writerClient.close();
    const whileDown = outcomes.slice(stoppedAt, restartedAt);
    assert.ok(whileDown.length > 0);
    for (const o of outcomes) assert.ok(o === "ok" || o.startsWith("Unavailable/"), `a read: ${o}`);
    assert.ok(
      whileDown.some((o) => o !== "ok"),
      "some calls saw the outage",
    );
    const { rows } = await db.query("SELECT 2 AS two");
    assert.deepEqual(rows, [{ two: 2 }]);

    // Nothing lost: every write answered OK is there; none refused before it was sent (statement_sent false) is.
    const direct = await t.pg(`${platform}_main`);
    const stored = new Set((await direct.query<{ id: number }>("SELECT id FROM writes")).rows.map((r) => r.id));
    const problems: string[] = [];
    for (const { id, error } of writes) {
      if (error === undefined && !stored.has(id)) problems.push(`#${id} answered OK but not stored`);
      if (error !== undefined && Code[error.code] !== "Unavailable") problems.push(`#${id}: ${Code[error.code]}/${error.reason}`);
      if (error?.metadata.statement_sent === "false" && stored.has(id)) problems.push(`#${id} stored though refused with statement_sent false`);
    }
    assert.deepEqual(problems, [], `${writes.length} writes, ${writes.filter((w) => w.error !== undefined).length} failed`);
    assert.ok(
      writes.some((w) => w.error !== undefined),
      "some writes saw the outage",
    );
    // Nothing leaked: the connections of before the restart are gone from the pool, its new ones all idle.
    await assertNoLeftovers(t, server.url, `${platform}_main`);
  });
});

describe("recovery: broken and stuck backends", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1, acquireTimeoutMillis: 1_000 } });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE ledger (id int PRIMARY KEY)");
  });
  after(() => t.close());

  it("idle pooled backends terminated with pg_terminate_backend are replaced", async () => {
    const db = t.client().platform(platform);
    const first = (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const admin = await t.pg();
    await admin.query("SELECT pg_terminate_backend($1)", [first]);
    await waitFor(async () => (await admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [first])).rowCount === 0, 5_000, "backend gone");
    const second = (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    assert.notEqual(second, first);
    await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
  });

  let nextId = 0;
  for (const transport of TRANSPORTS)
    for (const then of ["a statement", "COMMIT"] as const)
      it(`a backend killed mid-transaction (over a ${transport}), then ${then}: the call fails UNAVAILABLE, nothing of it commits, the pool replaces the connection`, async () => {
        const id = ++nextId;
        const s = await begunStream(t.client(), platform, {}, {}, transport);
        s.statement(`INSERT INTO ledger VALUES (${id})`);
        await expectKind(s, "result");
        const admin = await t.pg();
        const { rows } = await admin.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'db-gateway' AND state = 'idle in transaction'",
          [`${platform}_main`],
        );
        assert.equal(rows.length, 1, "the transaction's backend");
        await admin.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
        await waitFor(async () => (await admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [rows[0]!.pid])).rowCount === 0, 5_000, "backend gone");
        if (then === "COMMIT") s.send({ kind: { case: "commit", value: {} } });
        else s.statement(`INSERT INTO ledger VALUES (${id + 100})`);
        const error = await s.next().then(
          (answer) => assert.fail(`answered ${answer === "end" ? "end" : answer.case}`),
          (err: unknown) => GatewayError.from(err),
        );
        // The statement meets the lost connection (or, should the gateway not have read it yet, PostgreSQL's 57P01). COMMIT is
        // never sent on a lost connection: DATABASE_UNAVAILABLE, rolled back (not COMMIT_OUTCOME_UNKNOWN).
        const reasons = then === "COMMIT" ? ["DATABASE_UNAVAILABLE"] : ["DATABASE_UNAVAILABLE", "QUERY_FAILED"];
        assert.equal(Code[error.code], Code[Code.Unavailable], error.message);
        assert.ok(reasons.includes(error.reason), `${error.reason}: ${error.message}`);
        const direct = await t.pg(`${platform}_main`);
        assert.deepEqual((await direct.query("SELECT id FROM ledger WHERE id IN ($1, $2)", [id, id + 100])).rows, [], "nothing of the transaction committed");
        await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
        const db = t.client().platform(platform);
        assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
      });

  it("a stopped (SIGSTOP) backend makes its call time out at the deadline instead of hanging the pool", async () => {
    const db = t.client().platform(platform);
    const pid = (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    process.kill(pid, "SIGSTOP");
    try {
      const started = Date.now();
      // The client's own timer usually answers first; what matters is what the gateway does next.
      await assert.rejects(db.query("SELECT 1", [], { timeoutMs: 1_000 }), (err: unknown) => GatewayError.from(err).code === Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 5_000);
      // The gateway let go of the stuck connection itself: the pool (of one) serves the next call.
      await waitFor(async () => (await busyConnections(t, `${platform}_main`)) === 0, 5_000, "connection released");
      const { rows } = await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      assert.notEqual(rows[0]!.pid, pid);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    // Once it runs again, the stopped backend finds its connection closed and ends: none is left that the pool does not count.
    const admin = await t.pg();
    await waitFor(async () => (await admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid])).rowCount === 0, 5_000, "the stopped backend gone");
    await assertNoLeftovers(t, t.databaseUrl, `${platform}_main`);
  });
});
