// Quotas' arithmetic without a gateway: inheritance of each limit, token buckets, queries admitted together, counters given back.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GatewayError } from "../src/errors.js";
import { Quotas, type StoredQuota } from "../src/tenancy/quotas.js";

const stored = (q: Omit<StoredQuota, "updatedAt">): StoredQuota => ({ ...q, updatedAt: new Date() });

describe("Quotas", () => {
  it("inherit each limit on its own: tenant, then the platform's each-tenant quota, then the settings", () => {
    const quotas = new Quotas({ platform: { callsPerSecond: 100 }, tenant: { maxConnections: 10, maxStatementMillis: 60_000 } });
    quotas.replace([
      stored({ platform: "p", scope: "each-tenant", tenantId: "", limits: { maxConnections: 4, callsPerSecond: 50, burst: 5 } }),
      stored({ platform: "p", scope: "tenant", tenantId: "a", limits: { callsPerSecond: 2 } }),
    ]);
    // A rate set without a burst takes its own default burst, not the inherited one.
    assert.deepEqual(quotas.tenantLimits("p", "a"), { maxConnections: 4, callsPerSecond: 2, maxStatementMillis: 60_000 });
    assert.deepEqual(quotas.tenantLimits("p", "b"), { maxConnections: 4, callsPerSecond: 50, burst: 5, maxStatementMillis: 60_000 });
    assert.deepEqual(quotas.tenantLimits("q", "b"), { maxConnections: 10, maxStatementMillis: 60_000 });
    assert.deepEqual(quotas.platformLimits("p"), { callsPerSecond: 100 });
    assert.equal(quotas.statementMillis("p_a", 30_000), 30_000);
    assert.deepEqual(quotas.shareOf("p_a"), { maxConnections: 4 });
    assert.equal(quotas.replace(quotas.list()), false, "the same quotas again change nothing");
  });

  it("admit queries sent together as far as the rate allows, and refuse the rest with a RetryInfo", () => {
    const refused: number[] = [];
    const quotas = new Quotas({ platform: {}, tenant: {} }, (_p, _l, _s, n) => refused.push(n));
    quotas.put(stored({ platform: "p", scope: "tenant", tenantId: "a", limits: { callsPerSecond: 1, burst: 3 } }));
    const first = quotas.admitSome("p_a", 5);
    assert.equal(first.granted, 3);
    assert.equal(first.refusal?.reason, "RATE_LIMITED");
    assert.equal(first.refusal?.metadata.limit, "calls_per_second");
    assert.equal(first.refusal?.details.length, 1);
    first.leave();
    assert.throws(
      () => quotas.admit("p_a"),
      (err: GatewayError) => err.reason === "RATE_LIMITED",
    );
    assert.deepEqual(refused, [2, 1]);
    // A rate of 0 refuses everything, from the first call.
    quotas.put(stored({ platform: "p", scope: "tenant", tenantId: "b", limits: { callsPerSecond: 0 } }));
    assert.equal(quotas.admitSome("p_b", 1).granted, 0);
    quotas.put(stored({ platform: "p", scope: "platform", tenantId: "", limits: { callsPerSecond: 0, burst: 5 } }));
    assert.throws(() => quotas.chargePlatform("p"));
  });

  it("keep refilling a bucket while other quotas change", async () => {
    const quotas = new Quotas({ platform: {}, tenant: {} });
    quotas.put(stored({ platform: "p", scope: "tenant", tenantId: "a", limits: { callsPerSecond: 20, burst: 1 } }));
    quotas.admit("p_a")();
    for (let i = 0; i < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      quotas.put(stored({ platform: "p", scope: "tenant", tenantId: `other${i}`, limits: { maxConnections: 1 } }));
    }
    // 80 ms at 20 a second: the one token of its burst is back.
    assert.equal(quotas.admitSome("p_a", 1).granted, 1);
  });

  it("count statements in flight per tenant and per platform, given back once each", () => {
    const quotas = new Quotas({ platform: {}, tenant: {} });
    quotas.put(stored({ platform: "p", scope: "platform", tenantId: "", limits: { maxConcurrentStatements: 5 } }));
    quotas.put(stored({ platform: "p", scope: "each-tenant", tenantId: "", limits: { maxConcurrentStatements: 3 } }));
    const a = quotas.admitSome("p_a", 4);
    assert.equal(a.granted, 3);
    assert.equal(a.refusal?.reason, "QUOTA_EXCEEDED");
    assert.equal(a.refusal?.metadata.scope, "tenant");
    const b = quotas.admitSome("p_b", 4);
    assert.equal(b.granted, 2);
    assert.equal(b.refusal?.metadata.scope, "platform");
    assert.deepEqual(quotas.inFlight(), new Map([["p", 5]]));
    a.leave();
    a.leave(); // twice: counted once
    assert.deepEqual(quotas.inFlight(), new Map([["p", 2]]));
    b.leave();
    assert.deepEqual(quotas.inFlight(), new Map([["p", 0]]));
    // Databases that are not a platform's are not metered.
    assert.equal(quotas.admitSome("postgres", 9).granted, 9);
  });
});
