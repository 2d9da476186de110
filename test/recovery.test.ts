// Recovery without a gateway restart: PostgreSQL restarted under load, and backends terminated or stopped.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, GatewayError } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres.js";
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

  it("calls fail with UNAVAILABLE while the server is down and succeed again after, without a gateway restart", async () => {
    const db = t.client().platform(t.platforms[0]!);
    await db.query("SELECT 1");
    const outcomes: string[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          await db.query("SELECT 1", [], { timeoutMs: 3_000 });
          outcomes.push("ok");
        } catch (err) {
          const e = GatewayError.from(err);
          outcomes.push(`${Code[e.code]}/${e.reason}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await waitFor(() => outcomes.length >= 5, 5_000, "calls before the stop");
    await server.stop();
    const stoppedAt = outcomes.length;
    await waitFor(() => outcomes.length >= stoppedAt + 5, 10_000, "calls while down");
    await server.start();
    const restartedAt = outcomes.length;
    await waitFor(() => outcomes.slice(restartedAt).includes("ok"), 15_000, "a call after the restart");
    running = false;
    await loop;
    const whileDown = outcomes.slice(stoppedAt, restartedAt);
    assert.ok(whileDown.length > 0);
    for (const o of whileDown) assert.ok(o === "ok" || o.startsWith("Unavailable/"), `while down: ${o}`);
    assert.ok(
      whileDown.some((o) => o !== "ok"),
      "some calls saw the outage",
    );
    const { rows } = await db.query("SELECT 2 AS two");
    assert.deepEqual(rows, [{ two: 2 }]);
  });
});

describe("recovery: broken and stuck backends", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1, acquireTimeoutMillis: 1_000 } });
    platform = t.platforms[0]!;
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
  });
});
