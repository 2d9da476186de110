// Tenant roles' connection limits follow the settings, and PostgreSQL's refusal of a connection (53300) makes calls wait, not fail.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, GatewayError } from "../client-sdk/src/index.js";
import { roleConnectionLimit } from "../server/src/gateway.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { randomPlatform, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";
import { waitFor } from "./helpers/wait.js";

describe("tenant role connection limits", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 5, acquireTimeoutMillis: 3_000 } });
    platform = t.platforms[0]!;
    await t.adminClient().admin().createTenant(platform, "busy");
  });
  after(() => t.close());

  async function limitOf(role: string): Promise<number> {
    const admin = await t.pg();
    const { rows } = await admin.query<{ rolconnlimit: number }>("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", [role]);
    await admin.end();
    return rows[0]!.rolconnlimit;
  }

  async function setLimit(role: string, limit: number): Promise<void> {
    const admin = await t.pg();
    await admin.query(`ALTER ROLE ${pg.escapeIdentifier(role)} CONNECTION LIMIT ${limit}`);
    await admin.end();
  }

  it("are set from the pool size and the number of gateway instances, and brought up to date by a gateway that starts with other settings", async () => {
    assert.equal(await limitOf(`${platform}_busy`), roleConnectionLimit(5, 1));
    assert.equal(await limitOf(`${platform}_main`), roleConnectionLimit(5, 1));
    // Two instances with larger pools: the one that starts brings every role of its platforms to its own limit.
    const second = await startTestGateway({
      platforms: 0,
      pool: { maxConnectionsPerPool: 8 },
      overrides: { platformKeys: new Map([[platform, [t.keys[platform]!]]]), gatewaySecret: t.gatewaySecret, gatewayInstances: 2 },
    });
    try {
      assert.equal(roleConnectionLimit(8, 2), 19);
      assert.equal(await limitOf(`${platform}_busy`), 19);
      assert.equal(await limitOf(`${platform}_main`), 19);
      const { rows } = await createClient(second.clientOptions(t.keys[platform]!)).platform(platform).tenant("busy").query("SELECT 1 AS one");
      assert.deepEqual(rows, [{ one: 1 }]);
    } finally {
      await second.close();
    }
  });

  it("when PostgreSQL refuses more connections (53300), calls wait for the pool's own connections instead of failing", async () => {
    const role = `${platform}_busy`;
    // Another gateway, or an operator, holds all but two of the role's connections.
    await setLimit(role, 2);
    try {
      const client = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: false, coalesce: false, retry: { maxAttempts: 1 } });
      const tenant = client.platform(platform).tenant("busy");
      const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => tenant.query<{ i: number }>("SELECT $1::int AS i, pg_sleep(0.02)", [i])));
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason).message);
      assert.deepEqual(failures, []);
      assert.deepEqual(
        results.map((r) => (r as PromiseFulfilledResult<{ rows: { i: number }[] }>).value.rows[0]!.i),
        Array.from({ length: 40 }, (_, i) => i),
      );
      // Settled: an attempt PostgreSQL is about to refuse counts in the pool's size until it is refused.
      let size = Infinity;
      await waitFor(async () => {
        size = (await t.adminClient().admin().getPoolStats()).pools.find((p) => p.database === role)!.size;
        return size <= 2;
      }, 5_000).catch(() => assert.fail(`pool size ${size}`));
      client.close();
    } finally {
      await setLimit(role, roleConnectionLimit(5, 1));
    }
  });

  it("a database that PostgreSQL refuses any connection is RESOURCE_EXHAUSTED once the call's wait is over, saying why", async () => {
    await t.adminClient().admin().createTenant(platform, "refused");
    const role = `${platform}_refused`;
    await setLimit(role, 0);
    try {
      const client = createClient({ ...t.clientOptions(t.keys[platform]!), queryStream: false, coalesce: false, retry: { maxAttempts: 1 } });
      const err = await rejectsWith(
        client.platform(platform).tenant("refused").query("SELECT 1", [], { timeoutMs: 30_000 }),
        Code.ResourceExhausted,
        "POOL_EXHAUSTED",
      );
      assert.match(err.message, /PostgreSQL refused more \(SQLSTATE 53300: too many connections\)/);
      assert.equal(err.metadata.sqlstate, "53300");
      assert.equal(err.metadata.statement_sent, "false");
      // Once PostgreSQL lets it in again, the database is served.
      await setLimit(role, roleConnectionLimit(5, 1));
      const { rows } = await client.platform(platform).tenant("refused").query("SELECT 2 AS two", [], { timeoutMs: 5_000 });
      assert.deepEqual(rows, [{ two: 2 }]);
      client.close();
    } finally {
      await setLimit(role, roleConnectionLimit(5, 1));
    }
  });

  it("at the global cap, a database PostgreSQL refuses does not take the others' connections while it waits out its backoff", async () => {
    await t.adminClient().admin().createTenant(platform, "starved");
    const capped = await startTestGateway({
      platforms: 0,
      pool: { maxConnectionsPerPool: 3, maxTotalConnections: 3, acquireTimeoutMillis: 300 },
      overrides: { platformKeys: new Map([[platform, [t.keys[platform]!]]]), gatewaySecret: t.gatewaySecret },
    });
    try {
      const client = createClient({ ...capped.clientOptions(t.keys[platform]!), queryStream: false, coalesce: false, retry: { maxAttempts: 1 } });
      const busy = client.platform(platform).tenant("busy");
      const starved = client.platform(platform).tenant("starved");
      await busy.query("SELECT 1");
      // Known to this gateway (adopted: its limit set), then refused every connection, its own gone.
      await starved.query("SELECT 1");
      await setLimit(`${platform}_starved`, 0);
      const admin = await t.pg();
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [`${platform}_starved`]);
      await admin.end();
      const stolenFromBusy = async () =>
        (await createClient(capped.clientOptions(capped.adminKey)).admin().getPoolStats(platform)).pools.find((p) => p.database === `${platform}_busy`)
          ?.connectionsStolen ?? 0n;
      const before = await stolenFromBusy();
      const end = Date.now() + 2_000;
      let served = 0;
      const refusals: string[] = [];
      await Promise.all([
        ...Array.from({ length: 6 }, async () => {
          while (Date.now() < end) {
            await busy.query("SELECT 1");
            served++;
          }
        }),
        (async () => {
          while (Date.now() < end) {
            refusals.push(
              await starved.query("SELECT 1").then(
                () => "served",
                (err: unknown) => GatewayError.from(err).reason,
              ),
            );
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })(),
      ]);
      const stolen = Number((await stolenFromBusy()) - before);
      // One try per backoff (50 ms, doubling to 1 s) may close one of the busy database's connections: a handful in 2 s.
      assert.ok(stolen <= 8, `${stolen} of the busy database's connections closed for the refused one (${served} queries served)`);
      assert.ok(refusals.length > 0 && refusals.every((r) => r === "POOL_EXHAUSTED"), refusals.join());
      client.close();
    } finally {
      await setLimit(`${platform}_starved`, roleConnectionLimit(5, 1));
      await capped.close();
    }
  });

  it("a gateway whose administrative role may not change a tenant role's limit (PostgreSQL 16 on: no ADMIN OPTION on it) starts, serves it, and says why", async () => {
    const role = `${platform}_busy`;
    await setLimit(role, roleConnectionLimit(5, 1)); // as another gateway, with other settings, may have left it
    const adminRole = randomPlatform("adm");
    const password = randomBytes(16).toString("hex");
    const su = await t.pg();
    await su.query(`CREATE ROLE ${pg.escapeIdentifier(adminRole)} LOGIN CREATEDB CREATEROLE PASSWORD '${password}'`);
    const { rows: version } = await su.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v");
    const url = new URL(t.databaseUrl);
    url.username = adminRole;
    url.password = password;
    const { logger, lines } = keptLog("warn");
    let second: Awaited<ReturnType<typeof startTestGateway>> | undefined;
    try {
      second = await startTestGateway({
        platforms: 0,
        databaseUrl: url.toString(),
        pool: { maxConnectionsPerPool: 8 },
        overrides: { platformKeys: new Map([[platform, [t.keys[platform]!]]]), gatewaySecret: t.gatewaySecret, logger },
      });
      const { rows } = await createClient(second.clientOptions(t.keys[platform]!)).platform(platform).tenant("busy").query("SELECT current_user AS user");
      assert.deepEqual(rows, [{ user: role }]);
      if (version[0]!.v >= 160000) {
        assert.equal(await limitOf(role), roleConnectionLimit(5, 1));
        assert.ok(
          lines.some((l) => l.includes(role) && l.includes("could not be updated (the administrative role needs ADMIN OPTION on it)")),
          lines.join("\n"),
        );
      } else {
        assert.equal(await limitOf(role), roleConnectionLimit(8, 1));
      }
    } finally {
      await second?.close();
      await setLimit(role, roleConnectionLimit(5, 1));
      await su.query(`DROP OWNED BY ${pg.escapeIdentifier(adminRole)}`);
      await su.query(`DROP ROLE ${pg.escapeIdentifier(adminRole)}`);
    }
  });
});
