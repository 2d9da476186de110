// The tenants scenario of `npm run bench`: point selects on a random tenant database of many at concurrency 64, with PostgreSQL's peak connections of each setup.
import type pg from "pg";
import { createClient } from "../../client-sdk/src/index.js";
import { POINT_SQL, type Run } from "./run.js";
import { tenantDatabases } from "./tenant-databases.js";

export async function tenants(run: Run): Promise<void> {
  const { platform, gateway, sdk, bouncer, direct, bounced, closePools } = run;
  const scenario = `${run.tenants} tenants, random tenant, c=64`;
  const databases = await tenantDatabases(run);
  const { itemId } = databases;
  const select = (pool: pg.Pool) => pool.query(POINT_SQL, [itemId()]);
  // What a platform would write without a gateway: a pool per tenant database (pg's default size, 10).
  await databases.closeConnections();
  await databases.measure(
    scenario,
    "A pg direct (a pool per tenant)",
    databases.perTenant((d) => direct(d, 10), select),
  );
  await closePools();
  // PostgreSQL's own ceiling for this workload: one connection per tenant database, all opened before
  // measuring and kept open, none refused, no reset between queries and no process between client and server.
  await databases.closeConnections();
  await databases.measure(
    scenario,
    "A′ pg direct (one connection per tenant)",
    databases.perTenant((d) => direct(d, 1, true), select),
  );
  await closePools();
  if (bouncer) {
    await databases.closeConnections();
    await databases.measure(
      scenario,
      "B pg via PgBouncer (a pool per tenant)",
      databases.perTenant((d) => bounced(d, 10), select),
    );
    await closePools();
  }
  // The gateway sized for this many tenants. The queries of a turn, whatever their tenants, travel
  // in one QueryMany call.
  await databases.withSizedGateway(async (sized, sizing) => {
    const manySdk = createClient({ ...sized.clientOptions(sized.platformKey), queryStream: false });
    try {
      const db = manySdk.platform(platform);
      await databases.measure(
        scenario,
        `C SDK via gateway (${sizing}), QueryMany calls (queryStream: false)`,
        (tenant) => db.tenant(tenant).query(POINT_SQL, [itemId()]),
        sized,
      );
    } finally {
      manySdk.close();
    }
    const sizedSdk = sized.client().platform(platform);
    await databases.measure(scenario, `C SDK via gateway (${sizing})`, (tenant) => sizedSdk.tenant(tenant).query(POINT_SQL, [itemId()]), sized);
  });
  // The gateway as started for every scenario: default settings (a cap of 200 connections, 50 pools).
  await databases.closeConnections();
  await databases.measure(scenario, "C SDK via gateway (defaults)", (tenant) => sdk.tenant(tenant).query(POINT_SQL, [itemId()]), gateway);
}
