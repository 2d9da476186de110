// The batch scenario of `npm run bench`: 10 point selects at concurrency 16, one after another or as one SDK batch.
import type pg from "pg";
import { POINT_SQL, type Run } from "./run.js";

export async function batch({ mainDb, gateway, sdk, bouncer, direct, bounced, closePools, randomId, measure }: Run): Promise<void> {
  const scenario = "10 point selects, c=16";
  const ten = () => Array.from({ length: 10 }, () => ({ sql: POINT_SQL, params: [randomId()] }));
  const sequential = (pool: pg.Pool) => async () => {
    for (const s of ten()) await pool.query(s.sql, s.params);
  };
  await measure(scenario, "A pg direct, 10 sequential queries", 16, sequential(direct(mainDb, 16)));
  if (bouncer) await measure(scenario, "B pg via PgBouncer, 10 sequential queries", 16, sequential(bounced(mainDb, 16)));
  await closePools();
  await measure(
    scenario,
    "C SDK, 10 sequential queries",
    16,
    async () => {
      for (const s of ten()) await sdk.query(s.sql, s.params);
    },
    { gateway },
  );
  await measure(scenario, "C SDK, one batch of 10", 16, () => sdk.batch(ten()), { gateway });
}
