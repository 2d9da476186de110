// A commit token must be at or past its commit's WAL record, also when commits are asynchronous (synchronous_commit off, an operator's or a tenant's choice).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startReplicatedPostgres, type ReplicatedPostgres } from "./helpers/streaming-replica.js";
import { waitFor } from "./helpers/wait.js";

describe("commit tokens with asynchronous commits", () => {
  let servers: ReplicatedPostgres;
  let t: TestGateway;
  let platform: string;

  before(async () => {
    servers = await startReplicatedPostgres();
    // Asynchronous commits, flushed by the WAL writer at its own pace: the commit returns before its record is written.
    const primary = new pg.Client({ connectionString: servers.primaryUrl });
    await primary.connect();
    await primary.query("ALTER SYSTEM SET synchronous_commit = off");
    await primary.query("ALTER SYSTEM SET wal_writer_delay = '2s'");
    await primary.query("SELECT pg_reload_conf()");
    await primary.end();
    t = await startTestGateway({
      platforms: 1,
      databaseUrl: servers.primaryUrl,
      overrides: { primaryCluster: { replicas: [servers.replicaUrl] }, replicaMaxLagMillis: 60_000, readAfterWaitMillis: 150, healthCheckMillis: 200 },
    });
    platform = t.platforms[0]!;
    await t.client().platform(platform).query("CREATE TABLE note (id int PRIMARY KEY)");
    await waitFor(
      async () =>
        ((await (await fetch(`${t.httpUrl}/health`)).json()) as { clusters: { primary: { replicas?: { r1?: { serving: boolean } } } } }).clusters.primary
          .replicas?.r1?.serving === true,
      5_000,
      "the replica serving",
    );
  });
  after(async () => {
    await t?.close();
    await servers?.close();
  });

  it("a read carrying a write's token sees the write, wherever it is served", async () => {
    const session = t.client().platform(platform).session();
    // Another session's synchronous commit (another tenant's, the catalog's) has the WAL flushed to the end of its record, which the replica replays.
    const other = new pg.Client({ connectionString: servers.primaryUrl });
    await other.connect();
    await other.query("SET synchronous_commit = on");
    await other.query("CREATE TABLE IF NOT EXISTS elsewhere (id int)");
    const missed: number[] = [];
    for (let id = 1; id <= 20; id++) {
      await other.query("INSERT INTO elsewhere VALUES ($1)", [id]);
      await session.query("INSERT INTO note VALUES ($1)", [id]);
      const { rows } = await session.query("SELECT count(*)::int AS n, pg_is_in_recovery() AS standby FROM note WHERE id = $1", [id], { readOnly: true });
      if (rows[0]!.n !== 1) missed.push(id);
    }
    await other.end();
    assert.deepEqual(missed, [], "reads that carried their write's token and did not see it");
  });
});
