// Read-only calls served by a real streaming replica: within its lag bound, read-your-writes through commit tokens (per session and per client), a replica paused or stopped, and what /health and /metrics say of it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startReplicatedPostgres, type ReplicatedPostgres } from "./helpers/streaming-replica.js";
import { waitFor } from "./helpers/wait.js";

interface ReplicaHealth {
  clusters: Record<string, { connected: boolean; replicas?: Record<string, { serving: boolean; lag_seconds: number | null }> }>;
}

describe("streaming replicas", () => {
  let servers: ReplicatedPostgres;
  let t: TestGateway;
  let platform: string;

  const health = async () => (await (await fetch(`${t.httpUrl}/health`)).json()) as ReplicaHealth;
  const metric = async (pattern: RegExp) => Number(pattern.exec(await (await fetch(`${t.httpUrl}/metrics`)).text())?.[1] ?? 0);
  const servedBy = (by: string) => metric(new RegExp(`db_gateway_read_only_calls_total\\{cluster="primary",served_by="${by}"\\} (\\d+)`));

  before(async () => {
    servers = await startReplicatedPostgres();
    t = await startTestGateway({
      platforms: 1,
      databaseUrl: servers.primaryUrl,
      overrides: { primaryCluster: { replicas: [servers.replicaUrl] }, replicaMaxLagMillis: 1_500, readAfterWaitMillis: 150, healthCheckMillis: 200 },
    });
    platform = t.platforms[0]!;
    const db = t.client().platform(platform);
    await db.query("CREATE TABLE note (id int PRIMARY KEY, body text)");
    await waitFor(async () => (await health()).clusters.primary?.replicas?.r1?.serving === true, 5_000, "the replica serving");
  });
  after(async () => {
    await t?.close();
    await servers?.close();
  });

  it("serves read-only calls from the replica, as the tenant's role, and writes from the primary with a commit token", async () => {
    const db = t.client().platform(platform);
    const before = await servedBy("r1");
    const read = await db.query("SELECT pg_is_in_recovery() AS standby, current_user AS who", [], { readOnly: true });
    assert.deepEqual(read.rows, [{ standby: true, who: `${platform}_main` }]);
    assert.equal(read.commitToken, undefined);
    assert.equal(await servedBy("r1"), before + 1);
    assert.deepEqual((await db.query("SELECT pg_is_in_recovery() AS standby")).rows, [{ standby: false }], "a call not marked read-only runs on the primary");
    // A write marked read-only fails there, as PostgreSQL says.
    await assert.rejects(db.query("INSERT INTO note VALUES (0, 'x')", [], { readOnly: true }), (err: { sqlstate?: string }) => err.sqlstate === "25006");
    // A write answers with its token: a read after it, on the replica, sees it.
    const session = db.session();
    const written = await session.query("INSERT INTO note VALUES (1, 'one')");
    assert.match(written.commitToken ?? "", /^[0-9A-F]+\/[0-9A-F]+$/);
    const seen = await session.query("SELECT body, pg_is_in_recovery() AS standby FROM note WHERE id = 1", [], { readOnly: true });
    assert.deepEqual(seen.rows, [{ body: "one", standby: true }]);
    // A stream and a read-only transaction too.
    const streamed = [];
    for await (const row of db.stream("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true })) streamed.push(row);
    assert.deepEqual(streamed, [{ standby: true }]);
    const inTransaction = await db.transaction(async (tx) => (await tx.query("SELECT pg_is_in_recovery() AS standby")).rows[0], { readOnly: true });
    assert.deepEqual(inTransaction, { standby: true });
    const serializable = await db.transaction(async (tx) => (await tx.query("SELECT pg_is_in_recovery() AS standby")).rows[0], {
      readOnly: true,
      isolationLevel: "serializable",
    });
    assert.deepEqual(serializable, { standby: false }, "PostgreSQL runs no serializable transaction on a standby: the primary does");
  });

  it("reads a session's own writes while the replica lags: the primary serves them, and a read without a token may be stale", async () => {
    const db = t.client().platform(platform);
    await servers.onReplica("SELECT pg_wal_replay_pause()");
    try {
      const session = db.session();
      await session.query("INSERT INTO note VALUES (2, 'two')");
      const primaryBefore = await servedBy("primary");
      const mine = await session.query("SELECT body, pg_is_in_recovery() AS standby FROM note WHERE id = 2", [], { readOnly: true });
      assert.deepEqual(mine.rows, [{ body: "two", standby: false }], "the replica cannot replay the write: the primary serves the read");
      assert.equal(await servedBy("primary"), primaryBefore + 1);
      // A write committed inside a transaction: its commit answers with a token the session keeps.
      await session.transaction(async (tx) => tx.query("INSERT INTO note VALUES (3, 'three')"));
      const afterCommit = await session.transaction(async (tx) => (await tx.query("SELECT count(*)::int AS n FROM note WHERE id = 3")).rows[0], {
        readOnly: true,
      });
      assert.deepEqual(afterCommit, { n: 1 });
      // Without a token, a read-only read within the lag bound may be served stale by the replica.
      const other = await db.query("SELECT count(*)::int AS n, pg_is_in_recovery() AS standby FROM note WHERE id = 2", [], { readOnly: true });
      if (other.rows[0]!.standby === true) assert.equal(other.rows[0]!.n, 0, "served by the paused replica: without the write");
      // Past the lag bound (1.5 s: a loaded machine may leave the replica that far behind now and then), no read goes to the replica.
      await session.query("INSERT INTO note VALUES (4, 'four')");
      await waitFor(async () => ((await health()).clusters.primary?.replicas?.r1?.lag_seconds ?? 0) > 1.5, 8_000, "the replica's lag past the bound");
      assert.ok((await metric(/db_gateway_replica_lag_seconds\{cluster="primary",replica="r1"\} ([\d.e+-]+)/)) > 1.5);
      const late = await db.query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true });
      assert.deepEqual(late.rows, [{ standby: false }]);
    } finally {
      await servers.onReplica("SELECT pg_wal_replay_resume()");
    }
    await waitFor(async () => (await health()).clusters.primary?.replicas?.r1?.lag_seconds === 0, 5_000, "the replica caught up");
    const caughtUp = await db.query("SELECT count(*)::int AS n, pg_is_in_recovery() AS standby FROM note", [], { readOnly: true });
    assert.deepEqual(caughtUp.rows, [{ n: 4, standby: true }]);
  });

  it("with readYourWrites, every read-only read of the client carries its latest token", async () => {
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), readYourWrites: true });
    try {
      const db = client.platform(platform);
      await servers.onReplica("SELECT pg_wal_replay_pause()");
      try {
        await db.query("INSERT INTO note VALUES (5, 'five')");
        assert.deepEqual((await db.query("SELECT body FROM note WHERE id = 5", [], { readOnly: true })).rows, [{ body: "five" }]);
      } finally {
        await servers.onReplica("SELECT pg_wal_replay_resume()");
      }
      await assert.rejects(
        db.query("SELECT 1", [], { readOnly: true, readAfter: "not a token" }),
        (err: { reason?: string }) => err.reason === "INVALID_REQUEST",
      );
    } finally {
      client.close();
    }
  });

  it("a replica stopped fails no read: the primary serves them, /health says so, and the replica serves again once back", async () => {
    const db = t.client().platform(platform);
    await servers.stopReplica();
    try {
      // At once, before any check noticed: the call that finds it gone is served by the primary.
      for (let i = 0; i < 5; i++)
        assert.deepEqual((await db.query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true })).rows, [{ standby: false }]);
      await waitFor(async () => (await health()).clusters.primary?.replicas?.r1?.serving === false, 5_000, "the replica seen down");
      assert.equal(await metric(/db_gateway_replica_up\{cluster="primary",replica="r1"\} (\d)/), 0);
    } finally {
      await servers.startReplica();
    }
    await waitFor(async () => (await health()).clusters.primary?.replicas?.r1?.serving === true, 10_000, "the replica back");
    await waitFor(
      async () =>
        (await db.query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true }).then(
          (r) => r.rows[0]?.standby as boolean,
          () => false,
        )) === true,
      10_000,
      "reads on the replica again",
    );
  });
});
