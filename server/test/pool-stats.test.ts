// Pool statistics: the totals count every connection opened, however pools come and go, the reaper's evictions within its own round included.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { PoolManager } from "../src/pool/pool-manager.js";
import { startFaultProxy } from "../../test/helpers/fault-proxy.js";
import { pgUrl } from "../../test/helpers/gateway.js";
import { waitFor } from "../../test/helpers/wait.js";

describe("pool statistics", () => {
  it("count every connection opened while the reaper evicts a pool within its round", async () => {
    const target = new URL(pgUrl());
    // The proxy counts the connections PostgreSQL really received.
    const proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const through = new URL(proxy.url(pgUrl()));
    const pools = new PoolManager({
      connectionFor: (database) => ({ connectionString: Object.assign(new URL(through), { pathname: `/${database}` }).toString() }),
      maxConnectionsPerPool: 5,
      maxTotalConnections: 10,
      maxPools: 1,
      maxWaitersPerPool: 10,
      acquireTimeoutMillis: 5_000,
      poolIdleTimeoutMillis: 3_600_000,
      connectionIdleTimeoutMillis: 300,
      maxLifetimeMillis: 3_600_000,
      validateAfterIdleMillis: 3_600_000,
      reapIntervalMillis: 500,
      cancelGraceMillis: 1_000,
    });
    const limits = { deadline: Infinity };
    try {
      // template1's one connection is destroyed on release (the call failed), so its pool stays, empty and least recently used.
      await assert.rejects(
        pools.withConnection(
          "template1",
          () => {
            throw new Error("the call failed");
          },
          limits,
        ),
      );
      // Two idle connections of postgres: the reaper closes one for idling, and with one pool at most, the scheduler's
      // pulse that follows evicts a pool while the reaper's round goes on.
      await Promise.all([0, 1].map(() => pools.withConnection("postgres", (lease) => lease.client.query("SELECT pg_sleep(0.1)"), limits)));
      await waitFor(() => pools.stats().evictions >= 1, 5_000, "template1's pool evicted");
      await sleep(1_200); // a few more of the reaper's rounds
      assert.equal(pools.stats().connectionsOpened, proxy.connections, "every connection PostgreSQL received is counted once");
    } finally {
      await pools.closeAll();
      await proxy.close();
    }
  });
});
