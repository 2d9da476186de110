// Several gateway processes serving one PostgreSQL: the SDK balances over them, survives one killed or drained under load, and admin calls asked of two at once stay consistent.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, GatewayError, type ClientOptions, type GatewayClient, type MigrationFile } from "../client-sdk/src/index.js";
import { asSuperuser, dropPlatformDatabases, metricsText, pgUrl, randomPlatform } from "./helpers/gateway.js";
import { startGatewayProcess, type GatewayProcess } from "./helpers/gateway-process.js";
import { testPki } from "./helpers/pki.js";

/** Statements a gateway received for the platform, every method together. */
async function statementsServed(gateway: GatewayProcess, platform: string): Promise<number> {
  const text = await metricsText({ httpUrl: `http://127.0.0.1:${gateway.metricsPort}` });
  let total = 0;
  for (const line of text.split("\n"))
    if (line.startsWith("db_gateway_statements_total{") && line.includes(`platform="${platform}"`)) total += Number(line.split(" ").at(-1));
  return total;
}

/** What a run of load saw: reads and writes answered or failed, each write by its id. */
interface LoadOutcome {
  reads: number;
  failedReads: GatewayError[];
  acknowledged: number[];
  failedWrites: { id: number; error: GatewayError }[];
}

/**
 * Runs `workers` loops against `db` until `stop` resolves: each reads a row
 * (idempotent, so the SDK may retry it on another gateway), then inserts a row
 * under an id of its own (not idempotent: retried only when it certainly did
 * not reach PostgreSQL).
 */
async function runLoad(client: GatewayClient, platform: string, workers: number, firstId: number, stop: Promise<void>): Promise<LoadOutcome> {
  const db = client.platform(platform);
  const outcome: LoadOutcome = { reads: 0, failedReads: [], acknowledged: [], failedWrites: [] };
  let stopped = false;
  void stop.then(() => (stopped = true));
  let nextId = firstId;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (!stopped) {
        try {
          await db.query("SELECT count(*) FROM writes WHERE id = $1", [nextId - 1], { idempotent: true, timeoutMs: 10_000 });
          outcome.reads++;
        } catch (err) {
          outcome.failedReads.push(GatewayError.from(err));
        }
        const id = nextId++;
        try {
          await db.query("INSERT INTO writes (id) VALUES ($1)", [id], { timeoutMs: 10_000 });
          outcome.acknowledged.push(id);
        } catch (err) {
          outcome.failedWrites.push({ id, error: GatewayError.from(err) });
        }
      }
    }),
  );
  return outcome;
}

const describeErrors = (errors: readonly GatewayError[]) =>
  errors.map((e) => `${Code[e.code]} ${e.reason} ${JSON.stringify(e.metadata)}: ${e.message}`).join("\n");

describe("several gateways serving the same PostgreSQL", () => {
  const platform = randomPlatform("sg");
  const secrets = {
    platformKey: `key-${randomBytes(16).toString("hex")}`,
    adminKey: `admin-${randomBytes(16).toString("hex")}`,
    gatewaySecret: randomBytes(32).toString("hex"),
  };
  let gateways: GatewayProcess[] = [];
  const clients: GatewayClient[] = [];
  let direct: pg.Client;

  /** An SDK client over the given gateways (by `https://host:port`), with the platform's key or the admin key. */
  const clientOver = (urls: string[], admin = false, extra: Partial<ClientOptions> = {}): GatewayClient => {
    const pki = testPki();
    const { cert, key } = pki.clientFor(admin ? "admin" : platform);
    const client = createClient({ url: urls, apiKey: admin ? secrets.adminKey : secrets.platformKey, tls: { ca: pki.ca.cert, cert, key }, ...extra });
    clients.push(client);
    return client;
  };
  /** Each gateway's address as an IP literal (the certificate is checked for 127.0.0.1) and as a host name (for localhost). */
  const byAddress = (g: GatewayProcess) => `https://127.0.0.1:${g.port}`;
  const byName = (g: GatewayProcess) => `https://localhost:${g.port}`;
  const adminOf = (g: GatewayProcess) => clientOver([byAddress(g)], true).admin();

  before(async () => {
    // The same platform, keys, gateway secret and catalog (catalog_{platform}) on each: the same settings.
    gateways = await Promise.all([0, 1, 2].map(() => startGatewayProcess({ databaseUrl: pgUrl(), platform, secrets, env: { GATEWAY_INSTANCES: "3" } })));
    await adminOf(gateways[0]!).createTenant(platform, "");
    const url = new URL(pgUrl());
    url.pathname = `/${platform}_main`;
    direct = new pg.Client({ connectionString: url.toString() });
    await direct.connect();
    await clientOver([byAddress(gateways[0]!)])
      .platform(platform)
      .query("CREATE TABLE writes (id int8 PRIMARY KEY)");
  });

  after(async () => {
    clients.forEach((c) => c.close());
    await direct?.end().catch(() => undefined);
    await Promise.all(gateways.map((g) => g.close()));
    await dropPlatformDatabases([platform]);
  });

  it("balances calls over every gateway, round-robin", async () => {
    const before = await Promise.all(gateways.map((g) => statementsServed(g, platform)));
    const client = clientOver(gateways.map(byAddress), false, { coalesce: false });
    const db = client.platform(platform);
    for (let i = 0; i < 30; i++) await db.query("SELECT 1");
    const served = (await Promise.all(gateways.map((g) => statementsServed(g, platform)))).map((n, i) => n - before[i]!);
    assert.equal(
      served.reduce((a, b) => a + b),
      30,
    );
    // Each gateway has its connection up once the first calls have asked for them; after that, strictly in turn.
    for (const n of served) assert.ok(n >= 5, `statements per gateway: ${served.join(", ")}`);
  });

  it("spreads coalesced queries (QueryStream) over the gateways too", async () => {
    const before = await Promise.all(gateways.map((g) => statementsServed(g, platform)));
    const db = clientOver(gateways.map(byName)).platform(platform);
    for (let round = 0; round < 20; round++) await Promise.all(Array.from({ length: 8 }, () => db.query("SELECT 1")));
    const served = (await Promise.all(gateways.map((g) => statementsServed(g, platform)))).map((n, i) => n - before[i]!);
    assert.equal(
      served.reduce((a, b) => a + b),
      160,
    );
    for (const n of served) assert.ok(n >= 16, `statements per gateway: ${served.join(", ")}`);
  });

  it("CreateTenant of one tenant asked of two gateways at once: one creates it, the other says it exists; the tenant is whole", async () => {
    for (let round = 0; round < 5; round++) {
      const tenant = `both_${round}`;
      const results = await Promise.allSettled([adminOf(gateways[0]!).createTenant(platform, tenant), adminOf(gateways[1]!).createTenant(platform, tenant)]);
      const created = results.filter((r) => r.status === "fulfilled");
      const refused = results.flatMap((r) => (r.status === "rejected" ? [GatewayError.from(r.reason)] : []));
      assert.equal(created.length, 1, describeErrors(refused));
      assert.equal(refused.length, 1);
      assert.equal(refused[0]!.code, Code.AlreadyExists, describeErrors(refused));
      assert.equal(refused[0]!.reason, "DATABASE_EXISTS");
      // Whole: usable through either gateway, by its own role.
      for (const g of gateways.slice(0, 2)) {
        const { rows } = await clientOver([byAddress(g)])
          .platform(platform)
          .tenant(tenant)
          .query("SELECT current_user AS role, current_database() AS db");
        assert.deepEqual(rows, [{ role: `${platform}_${tenant}`, db: `${platform}_${tenant}` }]);
      }
    }
  });

  it("a tenant created through one gateway is served by another at once", async () => {
    await adminOf(gateways[0]!).createTenant(platform, "made_on_a");
    const { rows } = await clientOver([byAddress(gateways[1]!)])
      .platform(platform)
      .tenant("made_on_a")
      .query("SELECT current_database() AS db");
    assert.deepEqual(rows, [{ db: `${platform}_made_on_a` }]);
  });

  it("DropTenant asked of two gateways at once: one drops it, the other says it is gone; neither gateway serves it afterwards", async () => {
    for (let round = 0; round < 3; round++) {
      const tenant = `drop_${round}`;
      await adminOf(gateways[0]!).createTenant(platform, tenant);
      // Both gateways have the tenant's pool open.
      for (const g of gateways.slice(0, 2))
        await clientOver([byAddress(g)])
          .platform(platform)
          .tenant(tenant)
          .query("SELECT 1");
      const results = await Promise.allSettled([adminOf(gateways[0]!).dropTenant(platform, tenant), adminOf(gateways[1]!).dropTenant(platform, tenant)]);
      const refused = results.flatMap((r) => (r.status === "rejected" ? [GatewayError.from(r.reason)] : []));
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1, describeErrors(refused));
      assert.equal(refused[0]?.code, Code.NotFound, describeErrors(refused));
      assert.equal(refused[0]?.reason, "DATABASE_NOT_FOUND");
      const left = await asSuperuser("postgres", async (c) => {
        const dbs = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [`${platform}_${tenant}`]);
        const roles = await c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [`${platform}_${tenant}`]);
        return { databases: dbs.rowCount, roles: roles.rowCount };
      });
      assert.deepEqual(left, { databases: 0, roles: 0 });
      for (const g of gateways.slice(0, 2)) {
        const error = await clientOver([byAddress(g)])
          .platform(platform)
          .tenant(tenant)
          .query("SELECT 1")
          .then(
            () => undefined,
            (err: unknown) => GatewayError.from(err),
          );
        assert.ok(error !== undefined, `gateway ${g.port} still served the dropped tenant`);
        assert.equal(error.code, Code.NotFound, describeErrors([error]));
      }
    }
  });

  it("Migrate asked of two gateways at once: each migration runs once in each database, neither run fails", async () => {
    await adminOf(gateways[0]!).createTenant(platform, "mig_a");
    await adminOf(gateways[0]!).createTenant(platform, "mig_b");
    const migrations: MigrationFile[] = [
      { version: 1n, name: "create_counts", sql: "CREATE TABLE counts (n int8 NOT NULL);" },
      // Not idempotent: run twice, it would leave two rows.
      { version: 2n, name: "count_once", sql: "INSERT INTO counts VALUES (1); SELECT pg_sleep(0.2);" },
    ];
    const run = async (g: GatewayProcess) => {
      const outcomes = new Map<string, string>();
      for await (const progress of clientOver([byAddress(g)], true)
        .admin()
        .migrate(platform, migrations, { tenantIds: ["mig_a", "mig_b"] }))
        if ("database" in progress) outcomes.set(progress.database.tenantId, `${progress.database.outcome} [${progress.database.applied.join(",")}]`);
      return outcomes;
    };
    const [a, b] = await Promise.all([run(gateways[0]!), run(gateways[1]!)]);
    for (const tenant of ["mig_a", "mig_b"]) {
      const both = [a.get(tenant), b.get(tenant)].sort();
      assert.deepEqual(both, ["applied [1,2]", "current []"], `${tenant}: ${both.join(" / ")}`);
      const { rows } = await clientOver([byAddress(gateways[2]!)])
        .platform(platform)
        .tenant(tenant)
        .query<[bigint]>("SELECT count(*) FROM counts", [], { rowMode: "array" });
      assert.deepEqual(rows, [[1n]]);
    }
  });

  it("a gateway killed under load: no idempotent read fails, every acknowledged write is kept, failed writes say whether they may have run", async (t) => {
    const client = clientOver(gateways.map(byAddress));
    const victim = gateways[2]!;
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    const load = runLoad(client, platform, 16, 1_000_000, stopped);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const atKill = await Promise.all(gateways.slice(0, 2).map((g) => statementsServed(g, platform)));
    victim.kill("SIGKILL");
    assert.deepEqual(await victim.exited, { code: null, signal: "SIGKILL" });
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    stop();
    const outcome = await load;
    const afterKill = (await Promise.all(gateways.slice(0, 2).map((g) => statementsServed(g, platform)))).map((n, i) => n - atKill[i]!);
    const mayHaveRun = outcome.failedWrites.filter((w) => !w.error.notSent).length;
    t.diagnostic(
      `reads ${outcome.reads}, writes acknowledged ${outcome.acknowledged.length}, failed ${outcome.failedWrites.length} (${mayHaveRun} may have run)`,
    );

    assert.ok(outcome.reads > 100 && outcome.acknowledged.length > 100, `reads ${outcome.reads}, writes ${outcome.acknowledged.length}`);
    assert.deepEqual(describeErrors(outcome.failedReads), "", "idempotent reads failed");
    const stored = new Set((await direct.query<{ id: string }>("SELECT id FROM writes WHERE id >= 1000000")).rows.map((r) => Number(r.id)));
    const lost = outcome.acknowledged.filter((id) => !stored.has(id));
    assert.deepEqual(lost, [], "acknowledged writes missing");
    for (const { id, error } of outcome.failedWrites) {
      // Either the gateway was reached and the statement may have run (UNAVAILABLE, not retryable: only the caller
      // knows whether running it again is safe), or it certainly was not, and then it is not in the database.
      assert.equal(error.code, Code.Unavailable, describeErrors([error]));
      if (error.notSent) assert.ok(!stored.has(id), `write ${id} said it was not sent, yet it is stored`);
      else assert.equal(error.retryable, false);
    }
    for (const [i, n] of afterKill.entries()) assert.ok(n > 50, `gateway ${i} served ${n} statements after the kill: ${afterKill.join(", ")}`);
  });

  it("a gateway drained (SIGTERM) under load: no call fails, reads or writes", async (t) => {
    // The killed gateway stays in the list: it is skipped too.
    const client = clientOver(gateways.map(byName));
    const leaving = gateways[1]!;
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    const load = runLoad(client, platform, 16, 2_000_000, stopped);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const atDrain = await statementsServed(gateways[0]!, platform);
    leaving.kill("SIGTERM");
    assert.deepEqual(await leaving.exited, { code: 0, signal: null });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    stop();
    const outcome = await load;
    t.diagnostic(`reads ${outcome.reads}, writes acknowledged ${outcome.acknowledged.length}`);

    assert.ok(outcome.reads > 100 && outcome.acknowledged.length > 100, `reads ${outcome.reads}, writes ${outcome.acknowledged.length}`);
    assert.equal(describeErrors([...outcome.failedReads, ...outcome.failedWrites.map((w) => w.error)]), "");
    const stored = new Set((await direct.query<{ id: string }>("SELECT id FROM writes WHERE id >= 2000000")).rows.map((r) => Number(r.id)));
    assert.deepEqual(
      outcome.acknowledged.filter((id) => !stored.has(id)),
      [],
    );
    assert.ok((await statementsServed(gateways[0]!, platform)) - atDrain > 100, "the last gateway served the rest");
  });
});
