/**
 * PostgreSQL's own floor for the many-tenants workload, with no gateway:
 * point selects from 64 workers through plain `pg` clients, each client
 * used by one worker at a time, over (1) one database with 64 connections,
 * (2) TENANTS databases with one connection each, picked at random, and
 * (3) 64 of those databases; (1) and (2) also with `DISCARD ALL` pipelined
 * behind each statement, as the gateway resets a connection after every
 * call. Every connection is opened before measuring. Two rounds, SECONDS
 * each after a 1 s warm-up; prints queries/s and this process's CPU per
 * query. Starts an embedded PostgreSQL (PG_URL is ignored: the local
 * server's max_connections is too low).
 *
 *   [TENANTS=500] [SECONDS=6] npx tsx scripts/tenants-floor.ts
 */
import pg from "pg";
import { postgresForRun } from "../test/helpers/run-postgres.js";
import { mapLimit } from "../test/helpers/wait.js";

const TENANTS = Number(process.env.TENANTS ?? 500);
const SECONDS = Number(process.env.SECONDS ?? 6);
const postgres = await postgresForRun("tenants-floor-", { maxConnections: TENANTS + 100 });
const url = (db: string) => {
  const u = new URL(postgres.url);
  u.pathname = `/${db}`;
  return u.toString();
};
const admin = new pg.Client({ connectionString: postgres.url });
await admin.connect();
const sql = "SELECT id, qty, note FROM items WHERE id = $1";
const dbs = Array.from({ length: TENANTS }, (_, i) => `tf_${i}`);
try {
  await admin.query("CREATE DATABASE tf_template");
  const t = new pg.Client({ connectionString: url("tf_template") });
  await t.connect();
  await t.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await t.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 100) g");
  await t.end();
  await mapLimit(dbs, 4, (d) => admin.query(`CREATE DATABASE ${d} TEMPLATE tf_template`));
  const run = async (label: string, clients: pg.Client[], pick: () => pg.Client, discard: boolean) => {
    let n = 0;
    let stop = false;
    let counting = false;
    const busy = new Set<pg.Client>();
    const one = async (c: pg.Client) => {
      const id = 1 + Math.floor(Math.random() * 100);
      if (!discard) {
        await c.query(sql, [id]);
        return;
      }
      const pc = c as pg.Client & { pipeline: boolean; connection: { stream: import("node:net").Socket } };
      pc.pipeline = true;
      pc.connection.stream.cork();
      const a = c.query(sql, [id]);
      const b = c.query("DISCARD ALL");
      pc.connection.stream.uncork();
      await Promise.all([a, b]);
      pc.pipeline = false;
    };
    const worker = async () => {
      while (!stop) {
        let c = pick();
        while (busy.has(c)) c = pick();
        busy.add(c);
        try {
          await one(c);
        } finally {
          busy.delete(c);
        }
        if (counting) n++;
      }
    };
    const ws = Array.from({ length: 64 }, worker);
    await new Promise((r) => setTimeout(r, 1000));
    counting = true;
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    counting = false;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    stop = true;
    await Promise.all(ws);
    console.log(`${label.padEnd(40)} ${(n / secs).toFixed(0).padStart(7)} q/s  client CPU ${((cpu.user + cpu.system) / n).toFixed(0)} µs/q`);
  };
  const connect = async (d: string) => {
    const c = new pg.Client({ connectionString: url(d) });
    await c.connect();
    return c;
  };
  const single = await mapLimit(
    Array.from({ length: 64 }, () => "tf_0"),
    16,
    connect,
  );
  const many = await mapLimit(dbs, 16, connect);
  for (const c of many) await c.query(sql, [1]);
  for (let round = 0; round < 2; round++) {
    let i = 0;
    await run("1 database, 64 connections", single, () => single[i++ % 64]!, false);
    await run("1 database, 64 connections, +DISCARD", single, () => single[i++ % 64]!, true);
    await run(`${TENANTS} databases, 1 connection each`, many, () => many[Math.floor(Math.random() * many.length)]!, false);
    await run(`${TENANTS} databases, 1 connection each, +DISCARD`, many, () => many[Math.floor(Math.random() * many.length)]!, true);
    const hot = many.slice(0, 64);
    await run(`64 of the ${TENANTS} databases, 1 conn each`, hot, () => hot[i++ % 64]!, false);
  }
  await Promise.all([...single, ...many].map((c) => c.end()));
} finally {
  await admin.end();
  await postgres.close();
}
