// The write scenario of `npm run bench`: a small transaction (an update and an insert) at concurrency 16, through pg and through the SDK's two ways.
import type pg from "pg";
import { INSERT, UPDATE } from "../workload.js";
import type { Run } from "./run.js";

export async function write({ mainDb, gateway, sdk, bouncer, direct, bounced, closePools, randomId, measure }: Run): Promise<void> {
  const scenario = "write transaction, c=16";
  const viaPool = (pool: pg.Pool) => async () => {
    const client = await pool.connect();
    try {
      const id = randomId();
      await client.query("BEGIN");
      await client.query(UPDATE, [1, id]);
      await client.query(INSERT, [1, id]);
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  };
  await measure(scenario, "A pg direct", 16, viaPool(direct(mainDb, 16)));
  if (bouncer) await measure(scenario, "B pg via PgBouncer", 16, viaPool(bounced(mainDb, 16)));
  await closePools();
  await measure(
    scenario,
    "C SDK via gateway (atomic batch)",
    16,
    () => {
      const id = randomId();
      return sdk.batch(
        [
          { sql: UPDATE, params: [1, id] },
          { sql: INSERT, params: [1, id] },
        ],
        { atomic: true },
      );
    },
    { gateway },
  );
  await measure(
    scenario,
    "C SDK via gateway (transaction())",
    16,
    () =>
      sdk.transaction(async (tx) => {
        const id = randomId();
        await tx.query(UPDATE, [1, id]);
        await tx.query(INSERT, [1, id]);
      }),
    { gateway },
  );
}
