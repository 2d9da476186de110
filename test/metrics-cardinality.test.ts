// Metrics with 200 tenants, ten times the pools kept: label sets stay bounded (in a file of its own: creating and dropping the databases takes a minute or two).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { metricsText, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { mapLimit } from "./helpers/wait.js";

describe("metrics with many tenants", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 1, pool: { maxPools: 20 } });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  it("label sets stay bounded with 200 tenants", async () => {
    const admin = t.adminClient().admin();
    const tenants = Array.from({ length: 200 }, (_, i) => `m${String(i).padStart(3, "0")}`);
    await mapLimit(tenants, 8, (tenant) => admin.createTenant(platform, tenant));
    const client = t.client();
    await mapLimit(tenants, 16, (tenant) => client.platform(platform).tenant(tenant).query("SELECT 1"));
    const text = await metricsText(t);
    const series = (name: string) => text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).length;
    // One database label per pool holding connections, capped by MAX_POOLS (20 here), three states each.
    assert.ok(series("db_gateway_pool_connections") <= 20 * 3, `${series("db_gateway_pool_connections")} pool series`);
    // No other metric names a database or tenant.
    for (const line of text.split("\n")) {
      if (line.startsWith("db_gateway_pool_connections")) continue;
      assert.doesNotMatch(line, /_m\d{3}/, `a tenant in ${line}`);
    }
    assert.ok(series("db_gateway_queries_total") <= 10, `${series("db_gateway_queries_total")} queries_total series`);
  });
});
