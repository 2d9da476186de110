// The tenants scenario of `npm run bench`: point selects on a random tenant database of many at concurrency 64, with PostgreSQL's peak connections of each setup.
import type pg from "pg";
import { createClient } from "../../client-sdk/src/index.js";
import { startGatewayProcess, type GatewayProcess } from "../../test/helpers/gateway-process.js";
import { mapLimit } from "../../test/helpers/wait.js";
import { POINT_SQL, type Run } from "./run.js";

export async function tenants({
  tenants: count,
  platform,
  databaseUrl,
  admin,
  gateway,
  gatewaySecret,
  adminSdk,
  sdk,
  bouncer,
  direct,
  bounced,
  closePools,
  measure,
}: Run): Promise<void> {
  const scenario = `${count} tenants, random tenant, c=64`;
  await adminSdk.createTenant(platform, "template");
  const template = sdk.tenant("template");
  await template.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await template.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 100) g");
  const tenants = Array.from({ length: count }, (_, i) => `t${String(i).padStart(5, "0")}`);
  const created = Date.now();
  await mapLimit(tenants, 4, (tenant) => adminSdk.createTenant(platform, tenant, { template: `${platform}_template` }));
  console.log(`created ${count} tenant databases in ${((Date.now() - created) / 1000).toFixed(1)} s`);
  const pick = () => tenants[Math.floor(Math.random() * count)]!;
  const tenantId = () => 1 + Math.floor(Math.random() * 100);
  const perTenant = (make: (database: string) => pg.Pool) => {
    const byTenant = new Map<string, pg.Pool>();
    return (tenant: string) => {
      let pool = byTenant.get(tenant);
      if (pool === undefined) byTenant.set(tenant, (pool = make(`${platform}_${tenant}`)));
      return pool.query(POINT_SQL, [tenantId()]);
    };
  };
  /** Measures a setup after one query to every tenant (16 at a time), which opens its connections. */
  const measureTenants = async (setup: string, queryTenant: (tenant: string) => Promise<unknown>, gatewayProcess?: GatewayProcess) => {
    await mapLimit(tenants, 16, (tenant) => queryTenant(tenant).catch(() => undefined));
    await measure(scenario, setup, 64, () => queryTenant(pick()), { gateway: gatewayProcess, sampleConnections: true });
  };
  // Each setup starts with no connection to the tenant databases: those the previous one left
  // (PgBouncer's and the gateways' idle server connections) are closed first.
  const tenantConnections = `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname ~ '^${platform}_t[0-9]+$'`;
  const closeTenantConnections = async () => {
    await admin.query(`SELECT pg_terminate_backend(pid) FROM (${tenantConnections}) c`);
    while ((await admin.query(tenantConnections)).rowCount! > 0) await new Promise((r) => setTimeout(r, 50));
  };
  // What a platform would write without a gateway: a pool per tenant database (pg's default size, 10).
  await closeTenantConnections();
  await measureTenants(
    "A pg direct (a pool per tenant)",
    perTenant((d) => direct(d, 10)),
  );
  await closePools();
  // PostgreSQL's own ceiling for this workload: one connection per tenant database, all opened before
  // measuring, none refused, no reset between queries and no process between client and server.
  await closeTenantConnections();
  await measureTenants(
    "A′ pg direct (one connection per tenant)",
    perTenant((d) => direct(d, 1)),
  );
  await closePools();
  if (bouncer) {
    await closeTenantConnections();
    await measureTenants(
      "B pg via PgBouncer (a pool per tenant)",
      perTenant((d) => bounced(d, 10)),
    );
    await closePools();
  }
  // The gateway sized for this many tenants: a cap above their number and a pool for each, so
  // that every tenant database keeps a connection. The queries of a turn, whatever their
  // tenants, travel in one QueryMany call.
  const { rows: settings } = await admin.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'max_connections'");
  const sizedCap = count + 100;
  if (sizedCap + 50 <= Number(settings[0]!.setting)) {
    await closeTenantConnections();
    const env = { MAX_TOTAL_CONNECTIONS: String(sizedCap), MAX_POOLS: String(count + 10) };
    const sized = await startGatewayProcess({ databaseUrl, platform, env: { ...env, GATEWAY_SECRET: gatewaySecret } });
    try {
      const sizing = `MAX_TOTAL_CONNECTIONS=${env.MAX_TOTAL_CONNECTIONS}, MAX_POOLS=${env.MAX_POOLS}`;
      const manySdk = createClient({ ...sized.clientOptions(sized.platformKey), queryStream: false });
      try {
        const db = manySdk.platform(platform);
        await measureTenants(
          `C SDK via gateway (${sizing}), QueryMany calls (queryStream: false)`,
          (tenant) => db.tenant(tenant).query(POINT_SQL, [tenantId()]),
          sized,
        );
      } finally {
        manySdk.close();
      }
      const sizedSdk = sized.client().platform(platform);
      await measureTenants(`C SDK via gateway (${sizing})`, (tenant) => sizedSdk.tenant(tenant).query(POINT_SQL, [tenantId()]), sized);
    } finally {
      await sized.close();
    }
  } else {
    console.log(`max_connections ${settings[0]!.setting}: too few for a gateway with a connection per tenant (${sizedCap}); that setup is left out`);
  }
  // The gateway as started for every scenario: default settings (a cap of 200 connections, 50 pools).
  await closeTenantConnections();
  await measureTenants("C SDK via gateway (defaults)", (tenant) => sdk.tenant(tenant).query(POINT_SQL, [tenantId()]), gateway);
}
