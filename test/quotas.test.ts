// Quotas end to end: set through AdminService and kept in the catalog, each limit enforced per platform and per tenant, shared by a second gateway, and a noisy tenant kept from another's p99.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../wire/src/gen/google/rpc/error_details_pb.js";
import { QuotaScope } from "../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { Code, createClient, GatewayError, type GatewayClient } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { asSuperuser, keyLists, metricSample, metricsText, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { waitFor } from "./helpers/wait.js";

/** Milliseconds of a RetryInfo's delay on a refused call. */
function retryDelayMillis(err: GatewayError): number {
  const delay = ConnectError.from(err.cause).findDetails(RetryInfoSchema)[0]?.retryDelay;
  assert.ok(delay !== undefined, "a RetryInfo");
  return Number(delay.seconds) * 1000 + delay.nanos / 1e6;
}

/** Connections PostgreSQL has open to databases whose name starts with `prefix`, the gateway's tenant roles' only. */
async function backends(prefix: string): Promise<number> {
  return asSuperuser("postgres", async (c) => {
    const { rows } = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname LIKE $1 || '%' AND usename LIKE $1 || '%'", [
      prefix,
    ]);
    return rows[0]!.n;
  });
}

/** The 99th percentile of durations. */
function p99(durations: number[]): number {
  const sorted = [...durations].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]!;
}

describe("quotas", () => {
  let t: TestGateway;
  let p: string;
  let admin: GatewayClient;
  let client: GatewayClient;
  const tenants = ["q1", "q2", "q3"];

  before(async () => {
    t = await startTestGateway({ platforms: 2, pool: { maxConnectionsPerPool: 5, maxTotalConnections: 20 } });
    p = t.platforms[0]!;
    admin = t.adminClient();
    client = t.client(p);
    for (const tenant of tenants) await admin.admin().createTenant(p, tenant);
  });
  after(() => t.close());

  it("are checked against the gateway's ceilings, for configured platforms, by the admin only", async () => {
    const quotas = admin.admin();
    await rejectsWith(quotas.setQuota({ platform: p, tenantId: "q1" }, { maxConnections: 6 }), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(quotas.setQuota({ platform: p }, { maxConnections: 21 }), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(quotas.setQuota({ platform: p }, { maxStatementTimeMs: 61_000 }), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(quotas.setQuota({ platform: p }, { maxConcurrentStatements: 0 }), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(quotas.setQuota({ platform: p }, { callsPerSecond: -1 }), Code.InvalidArgument, "INVALID_REQUEST");
    await rejectsWith(quotas.setQuota({ platform: p, tenantId: "Bad Id" }, { burst: 1 }), Code.InvalidArgument, "INVALID_TENANT_ID");
    await rejectsWith(quotas.setQuota({ platform: "nosuchplatform" }, { burst: 1 }), Code.NotFound, "PLATFORM_NOT_FOUND");
    const raw = admin.raw.admin;
    const scopeless = raw.setQuota({ quota: { platform: p, scope: QuotaScope.UNSPECIFIED, limits: { burst: 1 } } });
    await rejectsWith(scopeless, Code.InvalidArgument, "INVALID_REQUEST");
    const tenantOnPlatform = raw.setQuota({ quota: { platform: p, scope: QuotaScope.PLATFORM, tenantId: "q1", limits: { burst: 1 } } });
    await rejectsWith(tenantOnPlatform, Code.InvalidArgument, "INVALID_REQUEST");
    // A platform's key reaches no AdminService call.
    await rejectsWith(client.admin().setQuota({ platform: p }, { burst: 1 }), Code.PermissionDenied, "PERMISSION_DENIED");
    assert.deepEqual((await quotas.listQuotas(p)).quotas, []);
  });

  it("are stored in the catalog, listed with the defaults, audited, and removed by setting no limit", async () => {
    const quotas = admin.admin();
    assert.deepEqual(await quotas.setQuota({ platform: p, eachTenant: true }, { maxConcurrentStatements: 7, maxStatementTimeMs: 1_500 }), {
      maxConcurrentStatements: 7,
      maxStatementTimeMs: 1_500,
    });
    await quotas.setQuota({ platform: p, tenantId: "" }, { callsPerSecond: 2.5 });
    const listed = await quotas.listQuotas(p);
    assert.deepEqual(
      listed.quotas.map((q) => [q.scope, q.tenantId, q.limits?.maxConcurrentStatements, q.limits?.callsPerSecond]),
      [
        [QuotaScope.EACH_TENANT, "", 7, undefined],
        [QuotaScope.TENANT, "", undefined, 2.5],
      ],
    );
    assert.equal(listed.tenantDefaults?.maxConnections, 5);
    assert.equal(Number(listed.tenantDefaults?.maxStatementTime?.seconds), 60);
    const [row] = await asSuperuser(`catalog_${p}`, async (c) => (await c.query("SELECT limits FROM public.quota WHERE scope = 'each-tenant'")).rows);
    assert.deepEqual(row.limits, { maxConcurrentStatements: 7, maxStatementMillis: 1_500 });
    const events = await admin.raw.admin.listAuditEvents({ platform: p });
    const set = events.events.find((e) => e.action === "quota.set" && e.detail.scope === "tenant");
    assert.equal(set?.database, `${p}_main`);
    assert.equal(set?.detail.callsPerSecond, "2.5");
    assert.equal(set?.outcome, "OK");
    await quotas.setQuota({ platform: p, eachTenant: true }, {});
    await quotas.setQuota({ platform: p, tenantId: "" }, {});
    assert.deepEqual((await quotas.listQuotas(p)).quotas, []);
  });

  it("limit a tenant's calls per second, with a RetryInfo, leaving its neighbours alone", async () => {
    await admin.admin().setQuota({ platform: p, tenantId: "q1" }, { callsPerSecond: 1, burst: 2 });
    try {
      const q1 = client.platform(p).tenant("q1");
      const results = await Promise.allSettled(Array.from({ length: 5 }, () => q1.query("SELECT 1")));
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
      assert.equal(refused.length, 3);
      for (const err of refused) {
        assert.equal(err.code, Code.ResourceExhausted);
        assert.equal(err.reason, "RATE_LIMITED");
        assert.deepEqual([err.metadata.scope, err.metadata.limit, err.metadata.tenant_id], ["tenant", "calls_per_second", "q1"]);
        assert.equal(err.metadata.statement_sent, "false");
        assert.ok(retryDelayMillis(err) > 0 && retryDelayMillis(err) <= 1_000);
      }
      // Its neighbour has a rate of its own (none).
      await Promise.all(Array.from({ length: 10 }, () => client.platform(p).tenant("q2").query("SELECT 1")));
      const text = await metricsText(t);
      assert.equal(metricSample(text, "db_gateway_quota_refusals_total", { platform: p, limit: "calls_per_second", scope: "tenant" }), 3);
    } finally {
      await admin.admin().setQuota({ platform: p, tenantId: "q1" }, {});
    }
  });

  it("limit concurrent statements of a tenant and of a platform: one more is QUOTA_EXCEEDED at once", async () => {
    await admin.admin().setQuota({ platform: p, eachTenant: true }, { maxConcurrentStatements: 2 });
    await admin.admin().setQuota({ platform: p }, { maxConcurrentStatements: 3 });
    try {
      const db = (tenant: string) => client.platform(p).tenant(tenant);
      const slow = [db("q1").query("SELECT pg_sleep(0.8)"), db("q1").query("SELECT pg_sleep(0.8)")];
      await waitFor(async () => metricSample(await metricsText(t), "db_gateway_platform_statements", { platform: p }) === 2, 5_000, "two statements running");
      const tenantRefusal = await rejectsWith(db("q1").query("SELECT 1"), Code.ResourceExhausted, "QUOTA_EXCEEDED");
      assert.deepEqual([tenantRefusal.metadata.scope, tenantRefusal.metadata.limit], ["tenant", "max_concurrent_statements"]);
      assert.ok(retryDelayMillis(tenantRefusal) > 0);
      // A batch and a transaction count as one statement each; the third of the platform runs, the fourth is refused.
      const third = db("q2").transaction(async (tx) => tx.query("SELECT pg_sleep(0.5)"));
      await waitFor(async () => metricSample(await metricsText(t), "db_gateway_platform_statements", { platform: p }) === 3, 5_000, "three statements");
      const platformRefusal = await rejectsWith(db("q3").batch([{ sql: "SELECT 1" }]), Code.ResourceExhausted, "QUOTA_EXCEEDED");
      assert.deepEqual([platformRefusal.metadata.scope, platformRefusal.metadata.platform], ["platform", p]);
      // Another platform is not counted.
      const other = t.platforms[1]!;
      await t.client(other).platform(other).query("SELECT 1");
      await Promise.all([...slow, third]);
      // Once they are over, calls run again.
      await db("q1").query("SELECT 1");
      assert.equal(metricSample(await metricsText(t), "db_gateway_platform_statements", { platform: p }), 0);
    } finally {
      await admin.admin().setQuota({ platform: p, eachTenant: true }, {});
      await admin.admin().setQuota({ platform: p }, {});
    }
  });

  it("end a tenant's statements at its own longest statement time, in every kind of call", async () => {
    await admin.admin().setQuota({ platform: p, tenantId: "q1" }, { maxStatementTimeMs: 300 });
    try {
      const q1 = client.platform(p).tenant("q1");
      const started = Date.now();
      await rejectsWith(q1.query("SELECT pg_sleep(5)"), Code.DeadlineExceeded, "DEADLINE_EXCEEDED");
      assert.ok(Date.now() - started < 4_000);
      await rejectsWith(q1.batch([{ sql: "SELECT pg_sleep(5)" }]), Code.DeadlineExceeded, "DEADLINE_EXCEEDED");
      await rejectsWith(
        q1.transaction(async (tx) => tx.query("SELECT pg_sleep(5)")),
        Code.DeadlineExceeded,
        "DEADLINE_EXCEEDED",
      );
      // QueryMany (several tenants in one call) ends the tenant's statement only.
      const raw = client.raw.query;
      const many = await raw.queryMany({
        platform: p,
        queries: [
          { tenantId: "q1", sql: "SELECT pg_sleep(5)" },
          { tenantId: "q2", sql: "SELECT pg_sleep(0.6)" },
        ],
      });
      assert.equal(many.results[0]?.outcome.case, "error");
      assert.equal(many.results[1]?.outcome.case, "result");
      // Its neighbour's statements run longer.
      await client.platform(p).tenant("q2").query("SELECT pg_sleep(0.6)");
    } finally {
      await admin.admin().setQuota({ platform: p, tenantId: "q1" }, {});
    }
  });

  it("hold a tenant and a platform to their share of the connection cap: calls beyond it wait, none fails", async () => {
    await admin.admin().setQuota({ platform: p, tenantId: "q1" }, { maxConnections: 1 });
    try {
      const q1 = client.platform(p).tenant("q1");
      let most = 0;
      const sampling = setInterval(() => void backends(`${p}_q1`).then((n) => (most = Math.max(most, n))), 50);
      await Promise.all(Array.from({ length: 4 }, () => q1.query("SELECT pg_sleep(0.3)")));
      clearInterval(sampling);
      assert.ok(most <= 1, `${most} connections to q1`);
      const stats = await admin.admin().getPoolStats(p);
      assert.ok(stats.pools.find((s) => s.database === `${p}_q1`)!.size <= 1);

      await admin.admin().setQuota({ platform: p }, { maxConnections: 2 });
      most = 0;
      const platformSampling = setInterval(() => void backends(`${p}_`).then((n) => (most = Math.max(most, n))), 50);
      const started = Date.now();
      await Promise.all(tenants.flatMap((tenant) => Array.from({ length: 2 }, () => client.platform(p).tenant(tenant).query("SELECT pg_sleep(0.3)"))));
      clearInterval(platformSampling);
      assert.ok(most <= 2, `${most} connections of the platform`);
      // Six statements of 0.3 s over two connections: at least three rounds.
      assert.ok(Date.now() - started >= 850);
    } finally {
      await admin.admin().setQuota({ platform: p, tenantId: "q1" }, {});
      await admin.admin().setQuota({ platform: p }, {});
    }
  });

  it("cut while connections are busy: the pools shrink to the new share as they come back, no further", async () => {
    await admin.admin().setQuota({ platform: p }, { maxConnections: 6 });
    try {
      const sleeping = ["q1", "q2"].flatMap((tenant) => Array.from({ length: 3 }, () => client.platform(p).tenant(tenant).query("SELECT pg_sleep(0.6)")));
      await waitFor(async () => (await backends(`${p}_q`)) === 6, 5_000, "six busy connections");
      await admin.admin().setQuota({ platform: p }, { maxConnections: 4 });
      await Promise.all(sleeping);
      const sizes = (await admin.admin().getPoolStats(p)).pools.reduce((n, pool) => n + pool.size, 0);
      assert.equal(sizes, 4);
    } finally {
      await admin.admin().setQuota({ platform: p }, {});
    }
  });

  it("of a dropped tenant are removed with it; the audit trail records what each set replaced", async () => {
    const quotas = admin.admin();
    await quotas.createTenant(p, "q4");
    await quotas.setQuota({ platform: p, tenantId: "q4" }, { maxConnections: 2 });
    await quotas.setQuota({ platform: p, tenantId: "q4" }, { maxConnections: 3 });
    const [latest] = (await admin.raw.admin.listAuditEvents({ platform: p, pageSize: 1 })).events;
    assert.deepEqual(latest?.detail, { scope: "tenant", maxConnections: "3", previous_maxConnections: "2" });
    await quotas.dropTenant(p, "q4");
    assert.deepEqual(
      (await quotas.listQuotas(p)).quotas.filter((q) => q.tenantId === "q4"),
      [],
    );
    const rows = await asSuperuser(`catalog_${p}`, async (c) => (await c.query("SELECT 1 FROM public.quota WHERE tenant_id = 'q4'")).rowCount);
    assert.equal(rows, 0);
    // A refused request is recorded with what it asked.
    await rejectsWith(quotas.setQuota({ platform: p }, { maxConnections: 999 }), Code.InvalidArgument, "INVALID_REQUEST");
    const [refused] = (await admin.raw.admin.listAuditEvents({ platform: p, pageSize: 1 })).events;
    assert.deepEqual([refused?.outcome, refused?.database, refused?.detail.maxConnections], ["INVALID_REQUEST", "", "999"]);
    await assert.rejects(quotas.setQuota({ platform: p, tenantId: "q1", eachTenant: true }, {}), TypeError);
  });

  it("set through one gateway apply on another serving the same catalog", async () => {
    const second = await startTestGateway({
      platforms: 0,
      createMain: false,
      overrides: {
        platformKeys: keyLists(t.keys),
        adminKeys: [t.adminKey],
        gatewaySecret: t.gatewaySecret,
        catalogDatabase: `catalog_${p}`,
        quotaRefreshMillis: 200,
      },
    });
    const secondClient = createClient(second.clientOptions(t.keys[p]!));
    try {
      const viaSecond = secondClient.platform(p).tenant("q2");
      await viaSecond.query("SELECT 1");
      await admin.admin().setQuota({ platform: p, tenantId: "q2" }, { callsPerSecond: 0 });
      await waitFor(
        () =>
          viaSecond.query("SELECT 1").then(
            () => false,
            (err) => GatewayError.from(err).reason === "RATE_LIMITED",
          ),
        5_000,
        "the quota applied on the second gateway",
      );
    } finally {
      await admin.admin().setQuota({ platform: p, tenantId: "q2" }, {});
      secondClient.close();
      await second.close();
    }
  });
});

describe("a noisy tenant under quotas", () => {
  let t: TestGateway;
  before(async () => {
    // A small cap that one tenant could fill alone.
    t = await startTestGateway({ platforms: 1, pool: { maxConnectionsPerPool: 6, maxTotalConnections: 6 } });
    const admin = t.adminClient().admin();
    await admin.createTenant(t.platforms[0]!, "noisy");
    await admin.createTenant(t.platforms[0]!, "quiet");
  });
  after(() => t.close());

  /** The quiet tenant's latencies (ms) while the noisy one floods slow statements. */
  async function quietLatencies(): Promise<{ quiet: number[]; noisyRefused: number }> {
    const p = t.platforms[0]!;
    const client = t.client(p);
    const noisy = client.platform(p).tenant("noisy");
    const quiet = client.platform(p).tenant("quiet");
    let flooding = true;
    let noisyRefused = 0;
    const flood = Array.from({ length: 24 }, async () => {
      while (flooding) {
        try {
          await noisy.query("SELECT pg_sleep(0.4)");
        } catch (err) {
          const error = GatewayError.from(err);
          if (error.code !== Code.ResourceExhausted) throw err;
          noisyRefused++;
          // As a well-behaved client does: wait as the RetryInfo says.
          await new Promise((resolve) => setTimeout(resolve, retryDelayMillis(error)));
        }
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const latencies: number[] = [];
    // Bursts of four with pauses long enough for an idle connection to be taken by the noisy tenant.
    for (let burst = 0; burst < 8; burst++) {
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          const started = performance.now();
          await quiet.query("SELECT 1");
          latencies.push(performance.now() - started);
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 1_100));
    }
    flooding = false;
    await Promise.all(flood);
    return { quiet: latencies, noisyRefused };
  }

  it("keep the quiet tenant's p99 under 250 ms while the noisy one floods 0.4 s statements", async (ctx) => {
    const p = t.platforms[0]!;
    const without = await quietLatencies();
    await t.adminClient().admin().setQuota({ platform: p, tenantId: "noisy" }, { maxConnections: 3, maxConcurrentStatements: 6 });
    const under = await quietLatencies();
    ctx.diagnostic(
      `quiet tenant's p99: ${p99(without.quiet).toFixed(1)} ms without quotas, ${p99(under.quiet).toFixed(1)} ms with the noisy one at 3 connections`,
    );
    assert.ok(under.noisyRefused > 0, "the noisy tenant met its quota");
    assert.ok(p99(under.quiet) < 250, `p99 ${p99(under.quiet)} ms`);
  });
});
