// The tenantwrites scenario of `npm run bench`: on a random tenant database of many at concurrency 64, half write transactions (an update and an insert), half point selects, through pg (A, A′) and the gateway (C), with PostgreSQL's peak connections of each setup.
import type pg from "pg";
import type { Database } from "../../client-sdk/src/index.js";
import { POINT_SQL, type Run } from "./run.js";
import { tenantDatabases } from "./tenant-databases.js";
import { atomicWriteBatch, interactiveWriteTransaction, pgWriteTransaction } from "./write.js";

export async function tenantWrites(run: Run): Promise<void> {
  const { platform, direct, closePools } = run;
  const scenario = `${run.tenants} tenants, half write transactions, c=64`;
  const databases = await tenantDatabases(run);
  const { itemId } = databases;
  const viaPool = (pool: pg.Pool) => (Math.random() < 0.5 ? pgWriteTransaction(pool, itemId()) : pool.query(POINT_SQL, [itemId()]));
  /** The workload through the SDK, its write transaction made by `writeTransaction`. */
  const viaSdk = (db: (tenant: string) => Database, writeTransaction: (db: Database, id: number) => Promise<unknown>) => (tenant: string) =>
    Math.random() < 0.5 ? writeTransaction(db(tenant), itemId()) : db(tenant).query(POINT_SQL, [itemId()]);
  // A pool per tenant database (pg's default size, 10), as the tenants scenario.
  await databases.closeConnections();
  await databases.measure(
    scenario,
    "A pg direct (a pool per tenant)",
    databases.perTenant((d) => direct(d, 10), viaPool),
  );
  await closePools();
  // PostgreSQL's own figure for the workload: one connection per tenant database, opened before measuring and kept open.
  await databases.closeConnections();
  await databases.measure(
    scenario,
    "A′ pg direct (one connection per tenant)",
    databases.perTenant((d) => direct(d, 1, true), viaPool),
  );
  await closePools();
  await databases.withSizedGateway(async (sized, sizing) => {
    const sdk = sized.client().platform(platform);
    const tenant = (id: string) => sdk.tenant(id);
    await databases.measure(scenario, `C SDK via gateway (${sizing}), atomic batch`, viaSdk(tenant, atomicWriteBatch), sized);
    await databases.measure(scenario, `C SDK via gateway (${sizing}), transaction()`, viaSdk(tenant, interactiveWriteTransaction), sized);
  });
  // The gateway as started for every scenario: default settings (a cap of 200 connections, 50 pools).
  await databases.closeConnections();
  await databases.measure(
    scenario,
    "C SDK via gateway (defaults), atomic batch",
    viaSdk((id) => run.sdk.tenant(id), atomicWriteBatch),
    run.gateway,
  );
}
