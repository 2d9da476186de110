/**
 * The profiling scripts' workload on a platform's main database: its tables
 * (`items`, 100,000 rows, and `history`) and the operations they time, the
 * same as `npm run bench`'s point select and write transaction.
 */
import { createClient, type Database } from "../client-sdk/src/index.js";
import type { GatewayProcess } from "../test/helpers/gateway-process.js";

export type Operation = "point" | "seq10" | "atomic" | "batch10" | "tx";

const POINT = "SELECT id, note FROM items WHERE id = $1";
/** The write transaction's statements (`npm run bench`'s too): $1 the delta, $2 the item. */
export const UPDATE = "UPDATE items SET qty = qty + $1 WHERE id = $2";
export const INSERT = "INSERT INTO history (item, delta) VALUES ($2, $1)";

export async function createWorkloadTables(db: Database): Promise<void> {
  await db.query("CREATE TABLE items (id int PRIMARY KEY, note text, qty int NOT NULL DEFAULT 0)");
  await db.query("INSERT INTO items SELECT g, 'x' || g FROM generate_series(1, 100000) g");
  await db.query("CREATE TABLE history (id bigserial PRIMARY KEY, item int NOT NULL, delta int NOT NULL)");
}

/**
 * One operation on the tables: a point select by primary key; the write
 * transaction (an update and an insert) as an atomic batch or with
 * `transaction()`; a batch of 10 point selects; 10 point selects one after
 * another, each awaited before the next (`npm run bench`'s sequential row).
 */
export function workloadOperation(db: Database, operation: Operation): () => Promise<unknown> {
  const id = () => 1 + Math.floor(Math.random() * 100_000);
  switch (operation) {
    case "point":
      return () => db.query(POINT, [id()]);
    case "seq10":
      return async () => {
        for (let i = 0; i < 10; i++) await db.query(POINT, [id()]);
      };
    case "atomic":
      return () => {
        const item = id();
        return db.batch(
          [
            { sql: UPDATE, params: [1, item] },
            { sql: INSERT, params: [1, item] },
          ],
          { atomic: true },
        );
      };
    case "batch10":
      return () => db.batch(Array.from({ length: 10 }, () => ({ sql: POINT, params: [id()] })));
    case "tx":
      return () =>
        db.transaction(async (tx) => {
          const item = id();
          await tx.query(UPDATE, [1, item]);
          await tx.query(INSERT, [1, item]);
        });
  }
}

/**
 * The platform's database as the measured operations reach it: `db` (the
 * gateway process's own client), or, with COALESCE=0 in the environment, a
 * client whose every query is a call of its own.
 */
export function measuredDatabase(gw: GatewayProcess, db: Database): Database {
  if (process.env.COALESCE === "0") return createClient({ ...gw.clientOptions(gw.platformKey), coalesce: false }).platform(gw.platform);
  if (process.env.QUERY_STREAM === "0") return createClient({ ...gw.clientOptions(gw.platformKey), queryStream: false }).platform(gw.platform);
  return db;
}
