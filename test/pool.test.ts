// The pool manager: one global cap over many databases, fairness, waiters and timeouts, idle and lifetime limits, session state reset.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, createClient, GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";
import { mapLimit, waitFor } from "./helpers/wait.js";

async function poolStats(t: TestGateway, platform?: string) {
  const client = t.adminClient();
  try {
    return await client.raw.admin.getPoolStats({ platform: platform ?? "" });
  } finally {
    client.close();
  }
}

function statsOf(stats: Awaited<ReturnType<typeof poolStats>>, database: string) {
  return stats.pools.find((p) => p.database === database);
}

describe("pool manager: one global cap over 100 tenant databases", () => {
  let t: TestGateway;
  let platform: string;
  const TENANTS = Array.from({ length: 100 }, (_, i) => `t${String(i).padStart(3, "0")}`);
  const CAP = 20;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxTotalConnections: CAP, maxConnectionsPerPool: 5, maxPools: 50, acquireTimeoutMillis: 10_000 } });
    platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    await mapLimit(TENANTS, 4, (tenant) => admin.createTenant(platform, tenant));
  });
  after(() => t.close());

  it("50 concurrent callers never make the gateway exceed the cap; every call succeeds or is RESOURCE_EXHAUSTED with a reason", async () => {
    const sampler = await t.pg();
    let peak = 0;
    let samples = 0;
    let sampling = true;
    const sampling$ = (async () => {
      while (sampling) {
        const { rows } = await sampler.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-gateway' AND starts_with(usename, $1)",
          [`${platform}_`],
        );
        peak = Math.max(peak, rows[0]!.n);
        samples++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const client = t.client();
    const outcomes = { ok: 0, exhausted: 0 };
    const reasons = new Set<string>();
    await mapLimit(
      Array.from({ length: 50 }, (_, i) => i),
      50,
      async (caller) => {
        for (let n = 0; n < 20; n++) {
          const tenant = TENANTS[(caller * 7 + n * 13) % TENANTS.length]!;
          try {
            const { rows } = await client.platform(platform).tenant(tenant).query<{ db: string }>("SELECT current_database() AS db, pg_sleep(0.005)");
            assert.equal(rows[0]!.db, `${platform}_${tenant}`);
            outcomes.ok++;
          } catch (err) {
            const e = GatewayError.from(err);
            assert.equal(e.code, Code.ResourceExhausted, `${e.reason}: ${e.message}`);
            reasons.add(e.reason);
            outcomes.exhausted++;
          }
        }
      },
    );
    sampling = false;
    await sampling$;
    const stats = await poolStats(t);
    assert.ok(samples > 5, `sampled ${samples} times`);
    assert.ok(peak <= CAP, `peak ${peak} connections > cap ${CAP}`);
    assert.ok(stats.totals!.totalConnections <= CAP);
    assert.ok(peak >= CAP / 2, `the load should use the pool (peak ${peak})`);
    assert.equal(outcomes.ok + outcomes.exhausted, 1000);
    assert.ok(outcomes.ok > 900, JSON.stringify({ ...outcomes, reasons: [...reasons] }));
    for (const reason of reasons) assert.ok(["POOL_EXHAUSTED", "TOO_MANY_WAITERS"].includes(reason), reason);
    const stolen = stats.pools.reduce((sum, p) => sum + Number(p.connectionsStolen), 0);
    assert.ok(stolen > 0, "at the cap, idle connections of some databases were given to others");
    // Nothing left behind: no call waiting, no connection busy, and PostgreSQL has exactly the connections the pools count, all idle.
    let seen = "";
    await waitFor(
      async () => {
        const { totals, pools } = await poolStats(t);
        const { rows } = await sampler.query<{ total: number; active: number }>(
          `SELECT count(*)::int AS total, (count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'))::int AS active
             FROM pg_stat_activity WHERE application_name = 'db-gateway' AND starts_with(usename, $1)`,
          [`${platform}_`],
        );
        const busy = pools.reduce((sum, p) => sum + p.busy + p.connecting, 0);
        seen = `${totals!.totalConnections} connections, ${busy} busy or connecting, ${totals!.waiting} waiting; PostgreSQL: ${rows[0]!.total} backends, ${rows[0]!.active} not idle`;
        return busy === 0 && totals!.waiting === 0 && rows[0]!.active === 0 && rows[0]!.total === totals!.totalConnections;
      },
      10_000,
      "the pools settled",
    ).catch((err: Error) => assert.fail(`${err.message}: ${seen}`));
    const { rows } = await client.platform(platform).tenant(TENANTS[0]!).query("SELECT 1 AS one");
    assert.deepEqual(rows, [{ one: 1 }]);
  });
});

describe("pool manager: fairness, limits, timeouts, hygiene", () => {
  let t: TestGateway;
  let platform: string;
  let client: GatewayClient;
  before(async () => {
    t = await startTestGateway({
      platforms: 1,
      pool: {
        maxTotalConnections: 2,
        maxConnectionsPerPool: 2,
        maxPools: 2,
        maxWaitersPerPool: 2,
        acquireTimeoutMillis: 5_000,
        connectionIdleTimeoutMillis: 300,
        poolIdleTimeoutMillis: 1_500,
        maxLifetimeMillis: 60_000,
      },
    });
    platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    for (const tenant of ["busy", "quiet", "x1", "x2", "x3"]) await admin.createTenant(platform, tenant);
    client = t.client();
  });
  after(() => t.close());

  it("a tenant without a connection is served while a busy tenant holds the whole cap", async () => {
    const busy = client.platform(platform).tenant("busy");
    let running = true;
    const load = Array.from({ length: 4 }, async () => {
      while (running) await busy.query("SELECT pg_sleep(0.2)").catch(() => undefined);
    });
    await waitFor(async () => (statsOf(await poolStats(t), `${platform}_busy`)?.busy ?? 0) === 2, 5_000, "busy tenant at the cap");
    const started = Date.now();
    const { rows } = await client.platform(platform).tenant("quiet").query("SELECT 1 AS one");
    const waited = Date.now() - started;
    running = false;
    await Promise.all(load);
    assert.deepEqual(rows, [{ one: 1 }]);
    assert.ok(waited < 2_000, `the quiet tenant waited ${waited} ms`);
    const busyStats = statsOf(await poolStats(t), `${platform}_busy`);
    assert.ok(Number(busyStats?.connectionsStolen ?? 0) >= 1, "a connection of the busy tenant made room");
  });

  it("a tenant whose only connection holds its Listen subscription is served as one without any, while a busy tenant holds the rest of the cap", async () => {
    const quiet = client.platform(platform).tenant("quiet");
    const subscription = await quiet.listen("news");
    const busy = client.platform(platform).tenant("busy");
    let running = true;
    const load = Array.from({ length: 4 }, async () => {
      while (running) await busy.query("SELECT pg_sleep(0.2)").catch(() => undefined);
    });
    try {
      await waitFor(async () => (statsOf(await poolStats(t), `${platform}_busy`)?.busy ?? 0) === 1, 5_000, "busy tenant at the rest of the cap");
      const started = Date.now();
      // Within the deadline, well before the acquire timeout (5 s) a starved pool would wait out.
      const { rows } = await quiet.query("SELECT 1 AS one", [], { timeoutMs: 4_000 });
      assert.deepEqual(rows, [{ one: 1 }]);
      assert.ok(Date.now() - started < 2_000, `the listening tenant waited ${Date.now() - started} ms`);
    } finally {
      running = false;
      await Promise.all(load);
      subscription.close();
    }
  });

  it("too many waiters fail at once with TOO_MANY_WAITERS, waiting ones with POOL_EXHAUSTED after the acquire timeout", async () => {
    const fast = await startTestGateway({
      platforms: 1,
      pool: { maxTotalConnections: 1, maxConnectionsPerPool: 1, maxWaitersPerPool: 2, acquireTimeoutMillis: 300 },
    });
    try {
      // Separate calls, each waiting for a connection of its own: not coalesced into one QueryMany.
      const separate = createClient({ ...fast.clientOptions(fast.keys[fast.platforms[0]!]!), coalesce: false });
      const db = separate.platform(fast.platforms[0]!);
      const holder = db.query("SELECT pg_sleep(1.5)");
      await waitFor(async () => (statsOf(await poolStats(fast), `${fast.platforms[0]}_main`)?.busy ?? 0) === 1, 5_000, "holder running");
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => db.query("SELECT 1")));
      await holder;
      const reasons = results.map((r) => (r.status === "rejected" ? GatewayError.from(r.reason).reason : "ok")).sort();
      assert.deepEqual(reasons, ["POOL_EXHAUSTED", "POOL_EXHAUSTED", "TOO_MANY_WAITERS", "TOO_MANY_WAITERS"]);
      for (const r of results) if (r.status === "rejected") assert.equal(GatewayError.from(r.reason).code, Code.ResourceExhausted);
      const stats = statsOf(await poolStats(fast), `${fast.platforms[0]}_main`)!;
      assert.equal(Number(stats.timeouts), 2);
      assert.equal(Number(stats.rejected), 2);
      // Once the holder is done, nothing is left waiting or busy, and the pool serves again.
      await assertNoLeftovers(fast, fast.databaseUrl, `${fast.platforms[0]}_main`);
      assert.deepEqual((await db.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
      separate.close();
    } finally {
      await fast.close();
    }
  });

  it("closes idle connections beyond the warm one, then the unused pool", async () => {
    const db = client.platform(platform).tenant("x1");
    await Promise.all([db.query("SELECT pg_sleep(0.1)"), db.query("SELECT pg_sleep(0.1)")]);
    assert.equal(statsOf(await poolStats(t), `${platform}_x1`)?.size, 2);
    await waitFor(async () => statsOf(await poolStats(t), `${platform}_x1`)?.size === 1, 5_000, "one warm connection left");
    assert.ok(Number(statsOf(await poolStats(t), `${platform}_x1`)!.connectionsIdleClosed) >= 1);
    const evictionsBefore = Number((await poolStats(t)).totals!.evictions);
    await waitFor(async () => statsOf(await poolStats(t), `${platform}_x1`) === undefined, 5_000, "unused pool closed");
    assert.ok(Number((await poolStats(t)).totals!.evictions) > evictionsBefore);
  });

  it("keeps at most MAX_POOLS pools with connections, evicting the least recently used", async () => {
    for (const tenant of ["x1", "x2", "x3"]) await client.platform(platform).tenant(tenant).query("SELECT 1");
    const stats = await poolStats(t);
    const withConnections = stats.pools.filter((p) => p.size > 0).map((p) => p.database);
    assert.ok(withConnections.length <= 2, withConnections.join());
    assert.ok(!withConnections.includes(`${platform}_x1`), "x1 was the least recently used");
  });

  it("replaces connections at their maximum lifetime", async () => {
    const short = await startTestGateway({ platforms: 1, pool: { maxLifetimeMillis: 300 } });
    try {
      const db = short.client().platform(short.platforms[0]!);
      const first = (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      await new Promise((r) => setTimeout(r, 600));
      const second = (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      assert.notEqual(second, first);
      assert.ok(Number(statsOf(await poolStats(short), `${short.platforms[0]}_main`)!.connectionsExpired) >= 1);
    } finally {
      await short.close();
    }
  });
});

describe("pool manager: no session state reaches the next call", () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 1 } });
  });
  after(() => t.close());

  it("SET, set_config, PREPARE, temporary tables, LISTEN and advisory locks are reset on the same connection", async () => {
    const db = t.client().platform(t.platforms[0]!);
    const pid = async () => (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const backend = await pid();
    await db.query("SET work_mem = '7MB'");
    await db.query("SELECT set_config('app.tenant', 'leaked', false)");
    await db.query("PREPARE leaked_plan AS SELECT 1");
    await db.query("CREATE TEMP TABLE leaked_temp (v int)");
    await db.query("LISTEN leaked_channel");
    await db.query("SELECT pg_advisory_lock(4242)");
    await db.query("SET search_path = pg_catalog");
    const { rows } = await db.query(`
      SELECT current_setting('work_mem') AS work_mem,
             coalesce(current_setting('app.tenant', true), '') AS app_tenant,
             (SELECT count(*)::int FROM pg_prepared_statements) AS prepared,
             to_regclass('pg_temp.leaked_temp') IS NULL AS temp_gone,
             (SELECT count(*)::int FROM pg_listening_channels()) AS listening,
             (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory,
             current_setting('search_path') AS search_path`);
    assert.deepEqual(rows, [{ work_mem: "4MB", app_tenant: "", prepared: 0, temp_gone: true, listening: 0, advisory: 0, search_path: '"$user", public' }]);
    assert.equal(await pid(), backend, "the same connection was reused, reset");
  });

  // Why no reset is skipped by a statement's leading keyword: plain DML and SELECT run code that leaves session state.
  it("an INSERT (a sequence's lastval, a trigger's set_config) and a SELECT through a view leave nothing for the next call either", async () => {
    const db = t.client().platform(t.platforms[0]!);
    await db.batch([
      "CREATE TABLE leaky (id serial PRIMARY KEY, v int)",
      `CREATE FUNCTION leaky_mark() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('app.marked', NEW.v::text, false); RETURN NEW; END $$`,
      "CREATE TRIGGER leaky_mark BEFORE INSERT ON leaky FOR EACH ROW EXECUTE FUNCTION leaky_mark()",
      "CREATE FUNCTION leaky_lock() RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_lock(4343); RETURN 1; END $$",
      "CREATE VIEW leaky_view AS SELECT leaky_lock() AS locked",
    ]);
    try {
      await db.query("INSERT INTO leaky (v) VALUES (7)");
      await db.query("SELECT * FROM leaky_view");
      const { rows } = await db.query(`
        SELECT coalesce(current_setting('app.marked', true), '') AS marked,
               (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory`);
      assert.deepEqual(rows, [{ marked: "", advisory: 0 }]);
      await assert.rejects(db.query("SELECT lastval()"), (err: GatewayError) => err.sqlstate === "55000"); // lastval is not yet defined in this session
    } finally {
      await db.batch(["DROP VIEW leaky_view", "DROP FUNCTION leaky_lock()", "DROP TABLE leaky", "DROP FUNCTION leaky_mark()"]);
    }
  });
});

describe("pool manager: at the cap, a database with a busy connection", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    // A longer wait than the default (50 ms), so that a slow machine's short wait stays below it.
    t = await startTestGateway({
      platforms: 1,
      pool: { maxTotalConnections: 2, maxConnectionsPerPool: 2, acquireTimeoutMillis: 5_000, stealAfterWaitMillis: 1_000 },
    });
    platform = t.platforms[0]!;
    const admin = t.adminClient().admin();
    for (const tenant of ["a", "b"]) await admin.createTenant(platform, tenant);
  });
  after(() => t.close());

  it("waits for its own connection a while (stealAfterWaitMillis) before closing another database's idle one, then takes it", async () => {
    const client = createClient({ ...t.clientOptions(t.keys[platform]!), coalesce: false }); // separate calls, not one pipeline
    try {
      const a = client.platform(platform).tenant("a");
      const b = client.platform(platform).tenant("b");
      await a.query("SELECT 1");
      await new Promise((resolve) => setTimeout(resolve, 1_100)); // a's connection idle long enough to be taken
      await b.query("SELECT 1"); // the cap (2) reached: a and b hold one connection each
      const stolen = async () => Number(statsOf(await poolStats(t), `${platform}_a`)?.connectionsStolen ?? 0);
      // A short wait: b's second call takes b's connection when its first is done.
      await Promise.all([b.query("SELECT 1"), b.query("SELECT 2")]);
      assert.equal(await stolen(), 0, "no connection closed for a short wait");
      // A long one: after the wait, a's idle connection makes room for b's second.
      const slow = b.query("SELECT pg_sleep(3)");
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = Date.now();
      await b.query("SELECT 3");
      const waited = Date.now() - started;
      await slow;
      assert.ok(waited >= 900 && waited < 2_500, `b's second call waited ${waited} ms`);
      assert.equal(await stolen(), 1);
    } finally {
      client.close();
    }
  });
});
