// AdminService.Migrate against PostgreSQL: a platform's migrations over its main, template and tenant databases, recorded where tenants read but cannot write; dry runs, drift, failures, resumption, no-transaction migrations, audit.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code, GatewayError, type DatabaseMigration, type GatewayClient, type MigrationFile, type MigrationTotals } from "../client-sdk/src/index.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { assertNoLeftovers } from "./helpers/leftovers.js";

const V1: MigrationFile = { version: 1n, name: "create_patients", sql: "CREATE TABLE patients (id bigint PRIMARY KEY, name text NOT NULL);" };
const V2: MigrationFile = {
  version: 2n,
  name: "add_born",
  sql: "ALTER TABLE patients ADD COLUMN born date;\nINSERT INTO patients VALUES (1, 'first', '2020-01-01');",
};
const V3: MigrationFile = {
  version: 3n,
  name: "create_notes",
  sql: "CREATE TABLE notes (id bigint PRIMARY KEY, patient bigint REFERENCES patients);\nCREATE INDEX notes_patient ON notes (patient);",
};
const V4: MigrationFile = {
  version: 4n,
  name: "index_names",
  sql: "-- db-gateway: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS patients_name ON patients (name);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS patients_born ON patients (born);\n",
};

async function run(
  admin: GatewayClient,
  platform: string,
  migrations: readonly MigrationFile[],
  options: Parameters<ReturnType<GatewayClient["admin"]>["migrate"]>[2] = {},
): Promise<{ byDatabase: Map<string, DatabaseMigration>; order: string[]; totals: MigrationTotals }> {
  const byDatabase = new Map<string, DatabaseMigration>();
  const order: string[] = [];
  let totals: MigrationTotals | undefined;
  for await (const progress of admin.admin().migrate(platform, migrations, options)) {
    if ("database" in progress) {
      byDatabase.set(progress.database.tenantId, progress.database);
      order.push(progress.database.tenantId);
    } else totals = progress.totals;
  }
  assert.ok(totals, "the totals come last");
  return { byDatabase, order, totals };
}

const summary = (byDatabase: Map<string, DatabaseMigration>) =>
  Object.fromEntries([...byDatabase].map(([tenant, d]) => [tenant, `${d.outcome} [${d.applied.join(",")}] v${d.version}`]));

describe("migrations over a platform's databases", () => {
  let t: TestGateway;
  let platform: string;
  let admin: GatewayClient;
  before(async () => {
    t = await startTestGateway({ platforms: 1 });
    platform = t.platforms[0]!;
    admin = t.adminClient();
    for (const tenant of ["template", "a", "b"]) await admin.admin().createTenant(platform, tenant);
  });
  after(async () => {
    try {
      // Nothing left busy or in a transaction by the migrations' connections, failed ones included.
      for (const tenant of ["", "a", "b", "c"]) await assertNoLeftovers(t, t.databaseUrl, `${platform}_${tenant || "main"}`);
    } finally {
      await t.close();
    }
  });

  it("applies each migration to the main database first, then every tenant, as the database's own role, recorded where the tenant reads and cannot write", async () => {
    const { byDatabase, order, totals } = await run(admin, platform, [V1, V2]);
    assert.equal(order[0], "", "the main database first");
    assert.deepEqual(summary(byDatabase), {
      "": "applied [1,2] v2",
      template: "applied [1,2] v2",
      a: "applied [1,2] v2",
      b: "applied [1,2] v2",
    });
    assert.deepEqual(
      { ...totals, durationMs: 0 },
      { databases: 4, applied: 4, current: 0, pending: 0, failed: 0, drifted: 0, skipped: 0, latestVersion: 2n, durationMs: 0 },
    );

    const tenant = t.client().platform(platform).tenant("a");
    const { rows } = await tenant.query("SELECT version, name, checksum, applied_by FROM dbgateway.schema_migrations ORDER BY version");
    assert.deepEqual(
      rows.map((r) => [r.version, r.name, r.checksum]),
      [V1, V2].map((m) => [m.version, m.name, createHash("sha256").update(m.sql).digest("hex")]),
    );
    assert.match(String(rows[0]!.applied_by), /admin key/);
    // The tables are the tenant's, as if it had made them; the record is not.
    const owners = await tenant.query("SELECT tableowner FROM pg_tables WHERE tablename = 'patients'");
    assert.equal(owners.rows[0]!.tableowner, `${platform}_a`);
    assert.deepEqual((await tenant.query("SELECT name FROM patients")).rows, [{ name: "first" }]);
    for (const sql of [
      "INSERT INTO dbgateway.schema_migrations VALUES (9, 'forged', 'x', now(), 1, 'me')",
      "DELETE FROM dbgateway.schema_migrations",
      "UPDATE dbgateway.schema_migrations SET checksum = 'x'",
      "SELECT * FROM dbgateway.migration_tokens",
      "SELECT dbgateway.record_migration('guess', 9, 'forged', 'x', 1, 'me')",
      "DROP SCHEMA dbgateway CASCADE",
      "ALTER TABLE dbgateway.schema_migrations RENAME TO mine",
    ]) {
      await assert.rejects(tenant.query(sql), (err: GatewayError) => err.sqlstate === "42501", sql);
    }
    assert.equal((await tenant.query("SELECT count(*)::int AS n FROM dbgateway.schema_migrations")).rows[0]!.n, 2);
  });

  it("a second run finds every database current; a dry run lists what a new tenant lacks and changes nothing", async () => {
    const again = await run(admin, platform, [V1, V2]);
    assert.ok([...again.byDatabase.values()].every((d) => d.outcome === "current" && d.version === 2n));
    await admin.admin().createTenant(platform, "c");
    const dry = await run(admin, platform, [V1, V2, V3], { dryRun: true });
    assert.deepEqual(summary(dry.byDatabase), {
      "": "pending [3] v2",
      template: "pending [3] v2",
      a: "pending [3] v2",
      b: "pending [3] v2",
      c: "pending [1,2,3] v0",
    });
    assert.equal(dry.totals.pending, 5);
    const c = t.client().platform(platform).tenant("c");
    assert.equal((await c.query("SELECT to_regnamespace('dbgateway') IS NULL AS none")).rows[0]!.none, true, "a dry run creates nothing");
    assert.equal((await t.client().platform(platform).tenant("a").query("SELECT to_regclass('notes') IS NULL AS none")).rows[0]!.none, true);
  });

  it("a tenant failing mid-migration fails alone, rolled back whole; running again resumes it; stop_on_failure starts no more", async () => {
    // b has a table in the way of migration 3's first statement.
    const b = t.client().platform(platform).tenant("b");
    await b.query("CREATE TABLE notes (x int)");
    const { byDatabase, totals } = await run(admin, platform, [V1, V2, V3]);
    const failed = byDatabase.get("b")!;
    assert.equal(failed.outcome, "failed");
    assert.equal(failed.failedVersion, 3n);
    assert.deepEqual(failed.applied, []);
    assert.equal(failed.version, 2n);
    assert.equal(failed.error?.reason, "QUERY_FAILED");
    assert.equal(failed.error?.sqlstate, "42P07");
    assert.equal(byDatabase.get("a")!.outcome, "applied");
    assert.deepEqual(byDatabase.get("c")!.applied, [1n, 2n, 3n]);
    assert.deepEqual({ applied: totals.applied, failed: totals.failed }, { applied: 4, failed: 1 });
    assert.equal((await b.query("SELECT max(version) AS v FROM dbgateway.schema_migrations")).rows[0]!.v, 2n);
    assert.equal((await b.query("SELECT to_regclass('notes_patient') IS NULL AS none")).rows[0]!.none, true);

    // With stop_on_failure, one at a time: the databases after b are not started.
    await b.query("DROP TABLE notes");
    await b.query("CREATE TABLE held (x int)");
    const V5 = { version: 5n, name: "create_held", sql: "CREATE TABLE held (id int)" };
    const stopped = await run(admin, platform, [V1, V2, V3, V5], { stopOnFailure: true, concurrency: 1 });
    assert.equal(stopped.byDatabase.get("b")!.outcome, "failed");
    assert.equal(stopped.byDatabase.get("b")!.failedVersion, 5n);
    assert.deepEqual(stopped.byDatabase.get("b")!.applied, [3n], "migration 3 went in before 5 failed");
    assert.equal(stopped.byDatabase.get("c")!.outcome, "skipped");
    assert.equal(stopped.byDatabase.get("template")!.outcome, "skipped");
    assert.ok(stopped.totals.skipped >= 2);

    await b.query("DROP TABLE held");
    const resumed = await run(admin, platform, [V1, V2, V3, V5]);
    assert.ok(
      [...resumed.byDatabase.values()].every((d) => d.version === 5n),
      JSON.stringify(summary(resumed.byDatabase)),
    );
    assert.equal(resumed.byDatabase.get("b")!.outcome, "applied");
  });

  it("runs a no-transaction migration statement by statement (CREATE INDEX CONCURRENTLY)", async () => {
    const { byDatabase } = await run(admin, platform, [
      V1,
      V2,
      V3,
      { version: 5n, name: "create_held", sql: "CREATE TABLE held (id int)" },
      { ...V4, version: 6n },
    ]);
    assert.ok(
      [...byDatabase.values()].every((d) => d.outcome === "applied" && d.version === 6n),
      JSON.stringify(summary(byDatabase)),
    );
    const { rows } = await t.client().platform(platform).tenant("a").query("SELECT indexname FROM pg_indexes WHERE tablename = 'patients' ORDER BY 1");
    assert.deepEqual(
      rows.map((r) => r.indexname),
      ["patients_born", "patients_name", "patients_pkey"],
    );
  });

  it("reports a database whose record disagrees with the files as drifted, and leaves it alone", async () => {
    const all = [V1, V2, V3, { version: 5n, name: "create_held", sql: "CREATE TABLE held (id int)" }, { ...V4, version: 6n }];
    const changed = all.map((m) => (m.version === 2n ? { ...m, sql: m.sql + "\n-- edited" } : m));
    const seven = { version: 7n, name: "more", sql: "CREATE TABLE more (id int)" };
    const drift = await run(admin, platform, [...changed, seven]);
    assert.ok(
      [...drift.byDatabase.values()].every((d) => d.outcome === "drifted" && d.error?.reason === "MIGRATION_DRIFT" && d.error.code === Code.FailedPrecondition),
    );
    assert.match(drift.byDatabase.get("a")!.error!.message, /version 2 \(add_born\) was recorded with another checksum/);
    const missingFile = await run(admin, platform, all.slice(1), { tenantIds: ["a"] });
    assert.match(missingFile.byDatabase.get("a")!.error!.message, /version 1 \(create_patients\) is recorded and is not among/);
    const gap = await run(admin, platform, [...all, { version: 4n, name: "late", sql: "SELECT 1" }], { tenantIds: ["a"] });
    assert.match(gap.byDatabase.get("a")!.error!.message, /version 4 \(late\) is missing below the latest recorded, 6/);
    assert.equal((await t.client().platform(platform).tenant("a").query("SELECT to_regclass('more') IS NULL AS none")).rows[0]!.none, true);
  });

  it("a tenant copied from the migrated template is born current, its record readable by its own role", async () => {
    await admin.admin().createTenant(platform, "copy", { template: `${platform}_template` });
    const copy = t.client().platform(platform).tenant("copy");
    assert.equal((await copy.query("SELECT max(version) AS v FROM dbgateway.schema_migrations")).rows[0]!.v, 6n);
    const owner = await copy.query("SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'dbgateway'");
    assert.equal(owner.rows[0]!.owner, "dbgateway_owner", "the record stays the gateway's");
    await assert.rejects(copy.query("DELETE FROM dbgateway.schema_migrations"), (err: GatewayError) => err.sqlstate === "42501");
    const all = [V1, V2, V3, { version: 5n, name: "create_held", sql: "CREATE TABLE held (id int)" }, { ...V4, version: 6n }];
    const { byDatabase } = await run(admin, platform, all, { tenantIds: ["copy"] });
    assert.equal(byDatabase.get("copy")!.outcome, "current");
    // The template's role kept no right in the copy (its role could not be dropped otherwise), and the copy drops cleanly.
    await admin.admin().dropTenant(platform, "copy");
    const direct = await t.pg();
    const { rows } = await direct.query("SELECT rolname FROM pg_roles WHERE rolname = $1", [`${platform}_copy`]);
    assert.deepEqual(rows, []);
  });

  it("a schema named dbgateway that the tenant made is a conflict, never used", async () => {
    await admin.admin().createTenant(platform, "squatter");
    const squatter = t.client().platform(platform).tenant("squatter");
    await squatter.query("CREATE SCHEMA dbgateway");
    await squatter.query("CREATE TABLE dbgateway.schema_migrations (version bigint, name text, checksum text)");
    const { byDatabase } = await run(admin, platform, [V1], { tenantIds: ["squatter"] });
    const result = byDatabase.get("squatter")!;
    assert.equal(result.outcome, "failed");
    assert.equal(result.error?.reason, "MIGRATION_SCHEMA_CONFLICT");
    assert.equal((await squatter.query("SELECT to_regclass('patients') IS NULL AS none")).rows[0]!.none, true);
  });

  it("refuses malformed migrations and requests before touching any database", async () => {
    const cases: [MigrationFile[], object, RegExp][] = [
      [[], {}, /no migrations/],
      [[{ ...V1, version: 0n }], {}, /not positive/],
      [[V1, { ...V2, version: 1n }], {}, /given twice/],
      [[{ ...V1, name: "no spaces" }], {}, /letters, digits or underscores/],
      [[{ ...V1, sql: "  " }], {}, /has no SQL/],
      [[{ ...V4, sql: "-- db-gateway: no-transaction\nCREATE INDEX CONCURRENTLY ON (" }], {}, /does not parse/],
      [[V1], { concurrency: 33 }, /at most 32/],
    ];
    for (const [migrations, options, message] of cases) {
      await assert.rejects(run(admin, platform, migrations, options), (err: GatewayError) => err.code === Code.InvalidArgument && message.test(err.message));
    }
    await assert.rejects(run(admin, "nosuchplatform", [V1]), (err: GatewayError) => err.code === Code.NotFound);
    await assert.rejects(
      (async () => {
        for await (const _ of t.client().admin().migrate(platform, [V1])) void _;
      })(),
      (err: GatewayError) => err.code === Code.PermissionDenied,
    );
  });

  it("records who applied what where, and how each run ended, in the audit trail", async () => {
    const { events } = await admin.raw.admin.listAuditEvents({ platform, pageSize: 1_000 });
    const applied = events.filter((e) => e.action === "migration.apply");
    const ok = applied.find((e) => e.tenantId === "a" && e.outcome === "OK" && e.detail.applied === "1,2");
    assert.ok(ok, "a's first run");
    assert.match(ok.actor, /admin key/);
    assert.ok(applied.some((e) => e.tenantId === "b" && e.outcome === "QUERY_FAILED" && e.detail.failed_version === "3"));
    assert.ok(applied.some((e) => e.tenantId === "a" && e.outcome === "MIGRATION_DRIFT"));
    const runs = events.filter((e) => e.action === "migration.run");
    assert.ok(runs.some((e) => e.detail.dry_run === "true" && e.detail.pending === "5"));
    assert.ok(runs.some((e) => e.outcome === "INVALID_MIGRATION"));
  });
});
