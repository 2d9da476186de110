// The many tenant databases that `npm run bench`'s tenants and tenantwrites scenarios share: made once per run, each setup measured from no connection to them, and the gateway sized for them.
import type pg from "pg";
import { startGatewayProcess, type GatewayProcess } from "../../test/helpers/gateway-process.js";
import { mapLimit } from "../../test/helpers/wait.js";
import type { Run } from "./run.js";

/** Rows of each tenant's `items`. */
export const TENANT_ITEMS = 100;

/** The run's tenant databases (copies of one template, with `items` and `history`) and how a setup is measured on them. */
export interface TenantDatabases {
  /** The tenant ids, `t00000` onwards. */
  readonly tenants: readonly string[];
  /** A tenant picked at random. */
  pick(): string;
  /** A random id of a tenant's `items`. */
  itemId(): number;
  /** `op` on a tenant through a pg.Pool per tenant database (made by `make` with the database's name, when first used). */
  perTenant(make: (database: string) => pg.Pool, op: (pool: pg.Pool) => Promise<unknown>): (tenant: string) => Promise<unknown>;
  /**
   * Closes every client connection to the tenant databases (those earlier
   * setups left: PgBouncer's and the gateways' idle server connections), so
   * that a setup starts with none.
   */
  closeConnections(): Promise<void>;
  /**
   * Measures a setup at concurrency 64, each operation on a random tenant,
   * after one operation on every tenant (16 at a time), which opens its
   * connections. PostgreSQL's peak connections to them are recorded.
   */
  measure(scenario: string, setup: string, op: (tenant: string) => Promise<unknown>, gateway?: GatewayProcess): Promise<void>;
  /**
   * Runs `fn` with a gateway sized for the tenants (a cap above their number
   * and a pool for each, so that every tenant database keeps a connection)
   * and its settings as text; says so and skips it when PostgreSQL's
   * max_connections leaves no room for it.
   */
  withSizedGateway(fn: (gateway: GatewayProcess, sizing: string) => Promise<void>): Promise<void>;
}

const made = new WeakMap<Run, Promise<TenantDatabases>>();

/** The run's tenant databases, made on the first call. */
export function tenantDatabases(run: Run): Promise<TenantDatabases> {
  let databases = made.get(run);
  if (databases === undefined) made.set(run, (databases = makeTenantDatabases(run)));
  return databases;
}

async function makeTenantDatabases(run: Run): Promise<TenantDatabases> {
  const { tenants: count, platform, databaseUrl, admin, adminSdk, sdk, gatewaySecret } = run;
  await adminSdk.createTenant(platform, "template");
  const template = sdk.tenant("template");
  await template.query("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)");
  await template.query("INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, $1::int) g", [TENANT_ITEMS]);
  await template.query("CREATE TABLE history (id bigserial PRIMARY KEY, item int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now())");
  const tenants = Array.from({ length: count }, (_, i) => `t${String(i).padStart(5, "0")}`);
  const created = Date.now();
  await mapLimit(tenants, 4, (tenant) => adminSdk.createTenant(platform, tenant, { template: `${platform}_template` }));
  // Each copy of the template is written to the WAL: a checkpoint now writes it all out, instead of
  // during the measurements, where it made the commits of the write transactions wait on the disk.
  await admin.query("CHECKPOINT");
  console.log(`created ${count} tenant databases in ${((Date.now() - created) / 1000).toFixed(1)} s (with a checkpoint after)`);

  // Client connections to the tenant databases only (as the measuring samples them).
  const tenantConnections = `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname ~ '^${platform}_t[0-9]+$'`;
  const closeTenantConnections = async () => {
    // A gateway still running (the default one, whose pools outlive their row) opens some again at once: wait at most 10 s.
    const until = Date.now() + 10_000;
    await admin.query(`SELECT pg_terminate_backend(pid) FROM (${tenantConnections}) c`);
    while ((await admin.query(tenantConnections)).rowCount! > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  };
  const pick = () => tenants[Math.floor(Math.random() * count)]!;
  return {
    tenants,
    pick,
    itemId: () => 1 + Math.floor(Math.random() * TENANT_ITEMS),
    perTenant(make, op) {
      const byTenant = new Map<string, pg.Pool>();
      return (tenant) => {
        let pool = byTenant.get(tenant);
        if (pool === undefined) byTenant.set(tenant, (pool = make(`${platform}_${tenant}`)));
        return op(pool);
      };
    },
    closeConnections: closeTenantConnections,
    async measure(scenario, setup, op, gateway) {
      await mapLimit(tenants, 16, (tenant) => op(tenant).catch(() => undefined));
      await run.measure(scenario, setup, 64, () => op(pick()), { gateway, sampleConnections: true });
    },
    async withSizedGateway(fn) {
      const { rows: settings } = await admin.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'max_connections'");
      const sizedCap = count + 100;
      if (sizedCap + 50 > Number(settings[0]!.setting)) {
        console.log(`max_connections ${settings[0]!.setting}: too few for a gateway with a connection per tenant (${sizedCap}); that setup is left out`);
        return;
      }
      await closeTenantConnections();
      const env = { MAX_TOTAL_CONNECTIONS: String(sizedCap), MAX_POOLS: String(count + 10) };
      const sized = await startGatewayProcess({ databaseUrl, platform, env: { ...env, GATEWAY_SECRET: gatewaySecret } });
      try {
        await fn(sized, `MAX_TOTAL_CONNECTIONS=${env.MAX_TOTAL_CONNECTIONS}, MAX_POOLS=${env.MAX_POOLS}`);
      } finally {
        await sized.close();
      }
    },
  };
}
