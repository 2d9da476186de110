/**
 * The pool's own CPU per lease, as a QueryStream message to many tenants
 * spends it: this checkout's PoolManager against the one at BASE (another
 * checkout, with node_modules), in this one process, in alternating rounds.
 * Each message takes one connection of each of DATABASES databases at once
 * under one deadline and signal, runs nothing on it (the lease says it is
 * reset, so no reset is sent) and gives it back: acquiring, leasing,
 * watching the deadline and signal, releasing and the scheduler's run.
 * Needs PG_URL's server (a superuser; default the local one) for the
 * connections, and room for 2 × DATABASES of them.
 *
 *   BASE=/tmp/base [DATABASES=24] [ROUNDS=20] npx tsx scripts/lease-cost.ts
 */
import { setMaxListeners } from "node:events";
import pg from "pg";
import type { PoolManager } from "../server/src/pool/pool-manager.js";

const base = process.env.BASE;
if (base === undefined) throw new Error("BASE: the directory of the other checkout");
const url = new URL(process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres");
const DATABASES = Number(process.env.DATABASES ?? 24);
const ROUNDS = Number(process.env.ROUNDS ?? 20);
const MESSAGES = 400;
const urlOf = (database: string) => Object.assign(new URL(url), { pathname: `/${database}` }).toString();
const names = Array.from({ length: DATABASES }, (_, i) => `lease_cost_${process.pid}_${i}`);
const admin = new pg.Client({ connectionString: url.toString() });
await admin.connect();

const managerOf = async (root: string): Promise<PoolManager> => {
  const { PoolManager: Manager } = (await import(`${root}/server/src/pool/pool-manager.ts`)) as { PoolManager: typeof PoolManager };
  return new Manager({
    connectionFor: (database) => ({ connectionString: urlOf(database) }),
    maxConnectionsPerPool: 1,
    maxTotalConnections: DATABASES,
    maxPools: DATABASES,
    maxWaitersPerPool: 1_000,
    acquireTimeoutMillis: 10_000,
    poolIdleTimeoutMillis: 600_000,
    connectionIdleTimeoutMillis: 600_000,
    maxLifetimeMillis: 3_600_000,
    validateAfterIdleMillis: 60_000,
    reapIntervalMillis: 60_000,
    cancelGraceMillis: 1_000,
  });
};

const managers: Record<string, PoolManager> = {};
try {
  for (const name of names) await admin.query(`CREATE DATABASE ${name}`);
  managers.base = await managerOf(base);
  managers.this = await managerOf(new URL("..", import.meta.url).pathname);
  const signal = new AbortController().signal;
  setMaxListeners(0, signal); // a listener per lease at BASE, before leases shared one
  const message = (manager: PoolManager) => {
    const limits = { deadline: Date.now() + 30_000, signal };
    return Promise.all(names.map((database) => manager.withConnection(database, async (lease) => lease.markReset(), limits)));
  };
  for (const manager of Object.values(managers)) for (let i = 0; i < 200; i++) await message(manager); // connections opened, code compiled
  const micros: Record<string, number> = { base: 0, this: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? ["this", "base"] : ["base", "this"]) {
      const before = process.cpuUsage();
      for (let i = 0; i < MESSAGES; i++) await message(managers[name]!);
      const spent = process.cpuUsage(before);
      micros[name]! += spent.user + spent.system;
    }
  }
  for (const name of ["base", "this"]) console.log(`${name}: ${(micros[name]! / (ROUNDS * MESSAGES * DATABASES)).toFixed(2)} µs of CPU per lease`);
} finally {
  for (const manager of Object.values(managers)) await manager.closeAll();
  for (const name of names) await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.end();
}
