// Deadlines and cancellation stop the statement on PostgreSQL, never another call's; the server-wide maximum statement time applies.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import { Code, GatewayError, type Database } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { waitFor } from "./helpers/wait.js";

/** The state of a backend in pg_stat_activity, or undefined once it is gone. */
async function backendState(admin: pg.Client, pid: number): Promise<{ state: string; query: string } | undefined> {
  const { rows } = await admin.query<{ state: string; query: string }>("SELECT state, query FROM pg_stat_activity WHERE pid = $1", [pid]);
  return rows[0];
}

describe("deadlines and cancellation cancel the statement on PostgreSQL", () => {
  let t: TestGateway;
  let db: Database;
  let admin: pg.Client;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1, maxWaitersPerPool: 200 } });
    db = t.client().platform(t.platforms[0]!);
    admin = await t.pg();
  });
  after(() => t.close());

  const pid = async () => (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;

  it("a 1 s deadline on pg_sleep(30): DEADLINE_EXCEEDED, and the same backend is idle again within 2 s", async () => {
    const backend = await pid();
    const started = Date.now();
    const err = await db.query("SELECT pg_sleep(30)", [], { timeoutMs: 1_000 }).then(() => undefined, GatewayError.from);
    assert.equal(err?.code, Code.DeadlineExceeded);
    const answered = Date.now() - started;
    assert.ok(answered < 1_800, `answered after ${answered} ms`);
    await waitFor(async () => (await backendState(admin, backend))?.state === "idle", 2_000, "the backend idle again");
    assert.notEqual((await backendState(admin, backend))?.query, "SELECT pg_sleep(30)");
    assert.equal(await pid(), backend, "the connection was kept, not replaced");
    await assertNoLeftovers(t, t.databaseUrl, `${t.platforms[0]}_main`);
  });

  it("a cancelled call (AbortSignal) is CANCELLED, and its statement stops on PostgreSQL", async () => {
    const backend = await pid();
    const abort = new AbortController();
    const call = db.query("SELECT pg_sleep(30)", [], { signal: abort.signal });
    call.catch(() => undefined); // it may fail before rejectsWith below listens: not an unhandled rejection
    await waitFor(async () => (await backendState(admin, backend))?.query === "SELECT pg_sleep(30)", 2_000, "the statement running");
    abort.abort();
    await rejectsWith(call, Code.Canceled, "Canceled");
    await waitFor(async () => (await backendState(admin, backend))?.state === "idle", 2_000, "the backend idle again");
    assert.equal(await pid(), backend);
    await assertNoLeftovers(t, t.databaseUrl, `${t.platforms[0]}_main`);
  });

  it("with a pool of one connection, 100 concurrent cancels never cancel another call's statement", async () => {
    const backend = await pid();
    for (let round = 0; round < 3; round++) {
      const calls = Array.from({ length: 100 }, async (_, i) => {
        if (i % 2 === 0) {
          // A victim: cancelled at a random moment around the end of its own statement.
          const abort = new AbortController();
          setTimeout(() => abort.abort(), Math.random() * 40);
          const outcome = await db.query("SELECT pg_sleep($1)", [Math.random() * 0.02], { signal: abort.signal }).then(
            () => "ok",
            (err: unknown) => Code[GatewayError.from(err).code],
          );
          assert.ok(outcome === "ok" || outcome === "Canceled", `a victim: ${outcome}`);
          return outcome;
        }
        // Innocent: must always succeed, with its own answer.
        const { rows } = await db.query<{ i: number }>("SELECT pg_sleep(0.002), $1::int AS i", [i]);
        assert.equal(rows[0]!.i, i);
        return "innocent";
      });
      const outcomes = await Promise.all(calls);
      assert.equal(outcomes.filter((o) => o === "innocent").length, 50);
      assert.ok(outcomes.includes("Canceled"), "some victims were cancelled");
    }
    // The one connection is still there and clean. A cancel that arrived late would have hit the
    // next statement on it (at least the gateway's own DISCARD ALL), and the connection would have
    // been destroyed: it never was.
    const { rows } = await db.query("SELECT txid_current_if_assigned() AS x");
    assert.deepEqual(rows, [{ x: null }]);
    assert.equal(await pid(), backend, "the same backend served every call");
    const stats = await t.adminClient().admin().getPoolStats(t.platforms[0]);
    assert.equal(Number(stats.pools[0]!.connectionsDiscarded), 0);
    await assertNoLeftovers(t, t.databaseUrl, `${t.platforms[0]}_main`);
  });

  it("a statement that outruns statement_timeout is DEADLINE_EXCEEDED; one cancelled by an operator is CANCELLED", async () => {
    const [timedOut] = await db.batch(["SET statement_timeout = 100", "SELECT pg_sleep(2)"]).then((r) => r.slice(1));
    assert.ok(timedOut instanceof GatewayError);
    assert.equal(timedOut.code, Code.DeadlineExceeded);
    assert.equal(timedOut.sqlstate, "57014");
    const backend = await pid();
    const call = db.query("SELECT pg_sleep(30)");
    call.catch(() => undefined); // it may fail before rejectsWith below listens: not an unhandled rejection
    await waitFor(async () => (await backendState(admin, backend))?.query === "SELECT pg_sleep(30)", 2_000, "the statement running");
    await admin.query("SELECT pg_cancel_backend($1)", [backend]);
    const err = await rejectsWith(call, Code.Canceled, "QUERY_FAILED");
    assert.equal(err.sqlstate, "57014");
    assert.equal(await pid(), backend, "the connection was kept");
    await assertNoLeftovers(t, t.databaseUrl, `${t.platforms[0]}_main`);
  });
});

describe("the server-wide maximum statement time", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1, overrides: { maxStatementMillis: 500 } });
  });
  after(() => t.close());

  it("applies to a call without a deadline, and PostgreSQL enforces it too", async () => {
    const db = t.client().platform(t.platforms[0]!);
    const started = Date.now();
    await rejectsWith(db.query("SELECT pg_sleep(10)"), Code.DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert.ok(Date.now() - started < 2_000);
    // The same limit is the session's statement_timeout: a backstop should the gateway's timer not fire.
    const { rows } = await db.query("SELECT current_setting('statement_timeout') AS v");
    assert.deepEqual(rows, [{ v: "500ms" }]);
  });
});
