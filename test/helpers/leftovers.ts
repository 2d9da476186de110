// What a fault test checks once the fault is over: no connection of a database's pool left busy, waiting or unaccounted for on PostgreSQL.
import assert from "node:assert/strict";
import pg from "pg";
import { createClient, type ClientOptions } from "../../client-sdk/src/index.js";
import { waitFor } from "./wait.js";

/** A gateway as the tests start it (in the test process or as a process of its own): its admin key makes the pool stats call. */
interface Gateway {
  adminKey: string;
  clientOptions(apiKey: string): ClientOptions;
}

/**
 * Waits (up to `timeoutMs`) until `database`'s pool on `gateway` has no
 * connection busy or connecting and no call waiting, and PostgreSQL (at
 * `databaseUrl`, as a superuser) has exactly as many backends of the
 * gateway's on that database as the pool counts, every one idle: none lost
 * track of, none left in a transaction or running a statement. Fails saying
 * what it saw last.
 */
export async function assertNoLeftovers(gateway: Gateway, databaseUrl: string, database: string, timeoutMs = 10_000): Promise<void> {
  const admin = createClient(gateway.clientOptions(gateway.adminKey));
  const direct = new pg.Client({ connectionString: databaseUrl });
  await direct.connect();
  let seen = "";
  try {
    await waitFor(
      async () => {
        const pool = (await admin.raw.admin.getPoolStats({})).pools.find((p) => p.database === database);
        const { rows } = await direct.query<{ total: number; active: number }>(
          `SELECT count(*)::int AS total, (count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'))::int AS active
             FROM pg_stat_activity WHERE datname = $1 AND application_name = 'db-gateway'`,
          [database],
        );
        const [size, busy, waiting, connecting] = [pool?.size ?? 0, pool?.busy ?? 0, pool?.waiting ?? 0, pool?.connecting ?? 0];
        seen = `the pool: ${size} connections, ${busy} busy, ${connecting} connecting, ${waiting} waiting; PostgreSQL: ${rows[0]!.total} backends, ${rows[0]!.active} not idle`;
        return busy === 0 && waiting === 0 && connecting === 0 && rows[0]!.active === 0 && rows[0]!.total === size;
      },
      timeoutMs,
      `${database}: nothing left busy or unaccounted for`,
    ).catch((err: Error) => assert.fail(`${err.message} (${seen})`));
  } finally {
    admin.close();
    await direct.end();
  }
}
