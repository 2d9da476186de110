// AdminService's tenant databases: create (from templates too), list and drop, concurrent creates, unconfigured platforms left alone.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, GatewayError } from "../client-sdk/src/index.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("AdminService: tenant databases", () => {
  let t: TestGateway;
  let platform: string;
  before(async () => {
    t = await startTestGateway({ platforms: 2, createMain: false });
    platform = t.platforms[0]!;
  });
  after(() => t.close());

  async function exists(name: string): Promise<boolean> {
    const admin = await t.pg();
    const { rowCount } = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    await admin.end();
    return rowCount === 1;
  }

  it("creates the main database (empty tenant id) and tenants, and lists them by platform", async () => {
    const admin = t.adminClient().admin();
    assert.deepEqual(await admin.createTenant(platform, ""), { name: `${platform}_main`, platform, tenantId: "", type: "main", cluster: "primary" });
    assert.deepEqual(await admin.createTenant(platform, "clinic_001"), {
      name: `${platform}_clinic_001`,
      platform,
      tenantId: "clinic_001",
      type: "tenant",
      cluster: "primary",
    });
    await admin.createTenant(t.platforms[1]!, "other");
    assert.ok(await exists(`${platform}_clinic_001`));
    assert.deepEqual(
      (await admin.listDatabases(platform)).map((d) => d.name),
      [`${platform}_clinic_001`, `${platform}_main`],
    );
    const all = (await admin.listDatabases()).map((d) => d.name);
    assert.ok(all.includes(`${t.platforms[1]!}_other`) && all.includes(`${platform}_main`));
    await rejectsWith(admin.createTenant(platform, "clinic_001"), Code.AlreadyExists, "DATABASE_EXISTS");
  });

  it("creates a tenant from a template of the same platform, with its objects", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "template");
    const template = t.client(platform).platform(platform).tenant("template");
    await template.query("CREATE TABLE settings (k text PRIMARY KEY, v text)");
    await template.query("INSERT INTO settings VALUES ('theme', 'dark')");
    // The gateway holds an idle pooled connection to the template now; creating from it must still work.
    await admin.createTenant(platform, "clinic_tpl", { template: `${platform}_template` });
    const copy = t.client(platform).platform(platform).tenant("clinic_tpl");
    const { rows } = await copy.query("SELECT v FROM settings WHERE k = $1", ["theme"]);
    assert.deepEqual(rows, [{ v: "dark" }]);
    // The copy's role owns the copied objects; the template's role keeps its own database.
    await copy.query("ALTER TABLE settings ADD COLUMN changed_at timestamptz");
    await copy.query("INSERT INTO settings VALUES ($1, $2)", ["lang", "en"]);
    await admin.createTenant(platform, "clinic_tpl2", { template: `${platform}_template` });
    const { rows: still } = await template.query("SELECT count(*)::int AS n FROM settings");
    assert.deepEqual(still, [{ n: 1 }]);
  });

  it("refuses templates that are missing or belong to another platform", async () => {
    const admin = t.adminClient().admin();
    await rejectsWith(admin.createTenant(platform, "c1", { template: `${platform}_nothing` }), Code.NotFound, "TEMPLATE_NOT_FOUND");
    await rejectsWith(admin.createTenant(platform, "c1", { template: `${t.platforms[1]!}_other` }), Code.InvalidArgument, "INVALID_TEMPLATE");
    await rejectsWith(admin.createTenant(platform, "c1", { template: "postgres" }), Code.InvalidArgument, "INVALID_TEMPLATE");
    await rejectsWith(admin.createTenant(platform, "c1", { template: "template1" }), Code.InvalidArgument, "INVALID_TEMPLATE");
    assert.equal(await exists(`${platform}_c1`), false);
  });

  it("20 simultaneous creates of one tenant: exactly one succeeds, the rest get ALREADY_EXISTS", async () => {
    const admin = t.adminClient().admin();
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => admin.createTenant(platform, "raced")));
    const ok = results.filter((r) => r.status === "fulfilled");
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => GatewayError.from(r.reason));
    assert.equal(ok.length, 1);
    assert.equal(failed.length, 19);
    for (const err of failed) {
      assert.equal(err.code, Code.AlreadyExists, err.message);
      assert.equal(err.reason, "DATABASE_EXISTS");
    }
    assert.ok(await exists(`${platform}_raced`));
  });

  it("drops a tenant while it has open connections, and then routes to NOT_FOUND", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "doomed");
    const tenant = t.client(platform).platform(platform).tenant("doomed");
    const direct = await t.pg(`${platform}_doomed`); // a connection that is not the gateway's
    direct.on("error", () => undefined); // it will be terminated
    const sleeping = tenant.query("SELECT pg_sleep(30)"); // a busy one of the gateway
    sleeping.catch(() => undefined);
    await waitFor(async () => (await activity(`${platform}_doomed`)) >= 2);

    assert.deepEqual(await admin.dropTenant(platform, "doomed"), {
      name: `${platform}_doomed`,
      platform,
      tenantId: "doomed",
      type: "tenant",
      cluster: "primary",
    });
    assert.equal(await exists(`${platform}_doomed`), false);
    await assert.rejects(sleeping, (err: unknown) => err instanceof GatewayError && err.code === Code.Unavailable);
    await rejectsWith(tenant.query("SELECT 1"), Code.NotFound, "DATABASE_NOT_FOUND");
    await rejectsWith(admin.dropTenant(platform, "doomed"), Code.NotFound, "DATABASE_NOT_FOUND");
    assert.ok(!(await admin.listDatabases(platform)).some((d) => d.tenantId === "doomed"));
  });

  it("touches no database of a platform that is not configured", async () => {
    const admin = t.adminClient().admin();
    const outsider = `${platform}x`; // a valid platform name with no key
    const direct = await t.pg();
    await direct.query(`CREATE DATABASE ${outsider}_production`);
    try {
      await rejectsWith(admin.dropTenant(outsider, "production"), Code.NotFound, "PLATFORM_NOT_FOUND");
      await rejectsWith(admin.createTenant(outsider, "x"), Code.NotFound, "PLATFORM_NOT_FOUND");
      await rejectsWith(admin.listDatabases(outsider), Code.NotFound, "PLATFORM_NOT_FOUND");
      assert.ok(await exists(`${outsider}_production`));
      assert.equal(await exists(`${outsider}_x`), false);
    } finally {
      await direct.query(`DROP DATABASE IF EXISTS ${outsider}_production`);
    }
  });

  it("does not drop the main database through DropTenant", async () => {
    await rejectsWith(t.adminClient().admin().dropTenant(platform, ""), Code.InvalidArgument, "INVALID_TENANT_ID");
    assert.ok(await exists(`${platform}_main`));
  });

  async function activity(database: string): Promise<number> {
    const admin = await t.pg();
    const { rows } = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [database]);
    await admin.end();
    return rows[0]!.n;
  }
});

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}
