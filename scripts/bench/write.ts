// The write scenario of `npm run bench`: a small transaction (an update and an insert) at concurrency 16, through pg and through the SDK's two ways.
import type pg from "pg";
import type { Database } from "../../client-sdk/src/index.js";
import { INSERT, UPDATE } from "../workload.js";
import type { Run } from "./run.js";

/** The write transaction on item `id` through `pool`, as a platform writes it with `pg`: BEGIN, UPDATE, INSERT, COMMIT on one client. */
export async function pgWriteTransaction(pool: pg.Pool, id: number): Promise<void> {
  const client = await pool.connect();
  // A checked-out client whose backend ends (the many-tenant scenarios terminate backends) must not end
  // the run: pg's pool listens for that only on idle clients.
  const ignore = () => undefined;
  client.on("error", ignore);
  let failed: Error | undefined;
  try {
    await client.query("BEGIN");
    await client.query(UPDATE, [1, id]);
    await client.query(INSERT, [1, id]);
    await client.query("COMMIT");
  } catch (err) {
    failed = err as Error;
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.off("error", ignore);
    // A client that failed is destroyed rather than reused (it may be broken).
    client.release(failed);
  }
}

/** The write transaction on item `id` as the SDK's atomic batch. */
export function atomicWriteBatch(db: Database, id: number): Promise<unknown> {
  return db.batch(
    [
      { sql: UPDATE, params: [1, id] },
      { sql: INSERT, params: [1, id] },
    ],
    { atomic: true },
  );
}

/** The write transaction on item `id` with the SDK's `transaction()`, a statement at a time. */
export function interactiveWriteTransaction(db: Database, id: number): Promise<unknown> {
  return db.transaction(async (tx) => {
    await tx.query(UPDATE, [1, id]);
    await tx.query(INSERT, [1, id]);
  });
}

export async function write({ mainDb, gateway, sdk, bouncer, direct, bounced, closePools, randomId, measure }: Run): Promise<void> {
  const scenario = "write transaction, c=16";
  const viaPool = (pool: pg.Pool) => () => pgWriteTransaction(pool, randomId());
  await measure(scenario, "A pg direct", 16, viaPool(direct(mainDb, 16)));
  if (bouncer) await measure(scenario, "B pg via PgBouncer", 16, viaPool(bounced(mainDb, 16)));
  await closePools();
  await measure(scenario, "C SDK via gateway (atomic batch)", 16, () => atomicWriteBatch(sdk, randomId()), { gateway });
  await measure(scenario, "C SDK via gateway (transaction())", 16, () => interactiveWriteTransaction(sdk, randomId()), { gateway });
}
