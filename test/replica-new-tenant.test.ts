// A tenant created moments ago, which a replica within its lag bound has not replayed yet, is read from the primary, and the replica keeps serving everyone else.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startReplicatedPostgres, type ReplicatedPostgres } from "./helpers/streaming-replica.js";
import { waitFor } from "./helpers/wait.js";

describe("a new tenant that a replica has not replayed yet", () => {
  let servers: ReplicatedPostgres;
  let t: TestGateway;
  let platform: string;
  const replicaServing = async () =>
    ((await (await fetch(`${t.httpUrl}/health`)).json()) as { clusters: { primary: { replicas?: { r1?: { serving: boolean } } } } }).clusters.primary.replicas
      ?.r1?.serving;

  before(async () => {
    servers = await startReplicatedPostgres();
    // A generous lag bound: the paused replica keeps serving reads.
    t = await startTestGateway({
      platforms: 1,
      databaseUrl: servers.primaryUrl,
      overrides: { primaryCluster: { replicas: [servers.replicaUrl] }, replicaMaxLagMillis: 60_000, readAfterWaitMillis: 50, healthCheckMillis: 10_000 },
    });
    platform = t.platforms[0]!;
    await waitFor(async () => (await replicaServing()) === true, 5_000, "the replica serving");
    await waitFor(
      async () =>
        (await t
          .client()
          .platform(platform)
          .query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true })
          .then((r) => r.rows[0]?.standby === true)) && (await replicaServing()) === true,
      10_000,
      "the main database read on the replica",
    );
  });
  after(async () => {
    await t?.close();
    await servers?.close();
  });

  it("serves the new tenant's read-only read from the primary without taking the replica out", async () => {
    await servers.onReplica("SELECT pg_wal_replay_pause()");
    try {
      await t.adminClient().admin().createTenant(platform, "fresh");
      const read = await t.client().platform(platform).tenant("fresh").query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true });
      assert.deepEqual(read.rows, [{ standby: false }]);
      assert.equal(await replicaServing(), true, "the replica still serves the other tenants' reads");
      const other = await t.client().platform(platform).query("SELECT pg_is_in_recovery() AS standby", [], { readOnly: true });
      assert.deepEqual(other.rows, [{ standby: true }]);
    } finally {
      await servers.onReplica("SELECT pg_wal_replay_resume()");
    }
  });
});
