/**
 * The pool's own CPU per lease, as a QueryStream message to many tenants
 * spends it: this checkout's PoolManager against the one at BASE (another
 * checkout, with node_modules), in this one process, in alternating rounds.
 * Each message takes one connection of each of DATABASES databases at once
 * under one deadline and signal, runs nothing on it (the lease says it is
 * reset, so no reset is sent) and gives it back: acquiring, leasing,
 * watching the deadline and signal, releasing and the scheduler's run.
 * OP=statement: each lease runs `SELECT 1` as a QueryStream query does
 * (`runPipelined`: the statement, its Sync and the reset in one write),
 * which adds the statement's and the reset's work in pg and the socket's.
 * Needs PG_URL's server (a superuser; default the local one) for the
 * connections, and room for 2 × DATABASES of them.
 *
 *   BASE=/tmp/base [OP=lease|statement] [DATABASES=24] [ROUNDS=20] npx tsx scripts/lease-cost.ts
 */
import { setMaxListeners } from "node:events";
import pg from "pg";
import type { prepareStatement as Prepare } from "../server/src/execution/execute.js";
import type { runPipelined as Run } from "../server/src/execution/pipeline.js";
import type { ResultBudget as Budget } from "../server/src/execution/result-budget.js";
import type { Lease, PoolManager } from "../server/src/pool/pool-manager.js";

const base = process.env.BASE;
if (base === undefined) throw new Error("BASE: the directory of the other checkout");
const url = new URL(process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres");
const DATABASES = Number(process.env.DATABASES ?? 24);
const ROUNDS = Number(process.env.ROUNDS ?? 20);
const OP = process.env.OP ?? "lease";
const MESSAGES = OP === "lease" ? 400 : 100;
const urlOf = (database: string) => Object.assign(new URL(url), { pathname: `/${database}` }).toString();
const names = Array.from({ length: DATABASES }, (_, i) => `lease_cost_${process.pid}_${i}`);
const admin = new pg.Client({ connectionString: url.toString() });
await admin.connect();

/** A checkout's PoolManager, and what its leases run: nothing, or `SELECT 1` as a QueryStream query. */
const checkoutOf = async (root: string): Promise<{ manager: PoolManager; work: (lease: Lease) => Promise<unknown> }> => {
  const { PoolManager: Manager } = (await import(`${root}/server/src/pool/pool-manager.ts`)) as { PoolManager: typeof PoolManager };
  const { runPipelined } = (await import(`${root}/server/src/execution/pipeline.ts`)) as { runPipelined: typeof Run };
  const { prepareStatement } = (await import(`${root}/server/src/execution/execute.ts`)) as { prepareStatement: typeof Prepare };
  const { ResultBudget, DEFAULT_RESULT_LIMITS } = (await import(`${root}/server/src/execution/result-budget.ts`)) as {
    ResultBudget: typeof Budget;
    DEFAULT_RESULT_LIMITS: Budget["limits"];
  };
  const budget = new ResultBudget(DEFAULT_RESULT_LIMITS);
  const work =
    OP === "lease"
      ? async (lease: Lease) => lease.markReset()
      : (lease: Lease) => runPipelined(lease, [prepareStatement({ sql: "SELECT 1", params: [] })], budget.account());
  const manager = new Manager({
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
  return { manager, work };
};

const checkouts: Record<string, { manager: PoolManager; work: (lease: Lease) => Promise<unknown> }> = {};
try {
  for (const name of names) await admin.query(`CREATE DATABASE ${name}`);
  checkouts.base = await checkoutOf(base);
  checkouts.this = await checkoutOf(new URL("..", import.meta.url).pathname);
  const signal = new AbortController().signal;
  setMaxListeners(0, signal); // a listener per lease at BASE, before leases shared one
  const message = ({ manager, work }: { manager: PoolManager; work: (lease: Lease) => Promise<unknown> }) => {
    const limits = { deadline: Date.now() + 30_000, signal };
    return Promise.all(names.map((database) => manager.withConnection(database, work, limits)));
  };
  for (const checkout of Object.values(checkouts)) for (let i = 0; i < 200; i++) await message(checkout); // connections opened, code compiled
  const micros: Record<string, number> = { base: 0, this: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? ["this", "base"] : ["base", "this"]) {
      const before = process.cpuUsage();
      for (let i = 0; i < MESSAGES; i++) await message(checkouts[name]!);
      const spent = process.cpuUsage(before);
      micros[name]! += spent.user + spent.system;
    }
  }
  for (const name of ["base", "this"]) console.log(`${name}: ${(micros[name]! / (ROUNDS * MESSAGES * DATABASES)).toFixed(2)} µs of CPU per ${OP}`);
} finally {
  for (const { manager } of Object.values(checkouts)) await manager.closeAll();
  for (const name of names) await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.end();
}
