// Tenant isolation: each database's SQL runs as its own unprivileged role, which can reach no other tenant's database or data.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, createClient, type Database } from "../client-sdk/src/index.js";
import { TenantRoles } from "../server/src/tenancy/roles.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { startTestGateway, type TestGateway } from "./helpers/gateway.js";

describe("tenant isolation: each database has its own role", () => {
  let t: TestGateway;
  let platform: string;
  let other: string;
  let a: Database;
  let roles: TenantRoles;
  before(async () => {
    // A table made directly by an administrator before the gateway starts: adoption must hand it over.
    t = await startTestGateway({ platforms: 2 });
    [platform, other] = t.platforms as [string, string];
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "a");
    await admin.createTenant(platform, "b");
    await admin.createTenant(other, "c");
    a = t.client(platform).platform(platform).tenant("a");
    await t.client(platform).platform(platform).tenant("b").query("CREATE TABLE secret_b (v text)");
    await t.client(platform).platform(platform).tenant("b").query("INSERT INTO secret_b VALUES ('b-only')");
    roles = new TenantRoles(t.gatewaySecret, 10);
  });
  after(() => t.close());

  /** A direct connection as a role, with its real (derived) password. */
  async function connectAs(role: string, database: string): Promise<pg.Client> {
    const url = new URL(t.databaseUrl);
    url.username = role;
    url.password = roles.password(role);
    url.pathname = `/${database}`;
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    return client;
  }

  it("runs tenant SQL as the tenant's own unprivileged role", async () => {
    const { rows } = await a.query<{ user: string; superuser: string }>("SELECT current_user AS user, current_setting('is_superuser') AS superuser");
    assert.deepEqual(rows, [{ user: `${platform}_a`, superuser: "off" }]);
    const role = await t.pg();
    const { rows: attrs } = await role.query(
      "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, rolconnlimit > 0 AS limited FROM pg_roles WHERE rolname = $1",
      [`${platform}_a`],
    );
    assert.deepEqual(attrs, [{ rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolbypassrls: false, rolreplication: false, limited: true }]);
    const { rows: owner } = await role.query("SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1", [`${platform}_a`]);
    assert.deepEqual(owner, [{ owner: "dbgateway_owner" }]);
  });

  it("tenant A's role can connect to its own database but not to tenant B's, nor another platform's", async () => {
    const own = await connectAs(`${platform}_a`, `${platform}_a`);
    await own.end();
    for (const target of [`${platform}_b`, `${other}_c`, `${platform}_main`]) {
      await assert.rejects(connectAs(`${platform}_a`, target), (err: pg.DatabaseError) => {
        assert.equal(err.code, "42501", `${target}: ${err.message}`);
        return true;
      });
    }
  });

  const FORBIDDEN: [string, string][] = [
    ["SET ROLE to the administrator", "SET ROLE postgres"],
    ["SET ROLE to another tenant", "SET ROLE %OTHER%"],
    ["SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION postgres"],
    ["COPY … TO PROGRAM", "COPY (SELECT 1) TO PROGRAM 'true'"],
    ["pg_read_file", "SELECT pg_read_file('/etc/passwd')"],
    ["lo_import", "SELECT lo_import('/etc/passwd')"],
    ["ALTER SYSTEM", "ALTER SYSTEM SET work_mem = '1MB'"],
    ["CREATE DATABASE", "CREATE DATABASE sneaky"],
    ["CREATE ROLE", "CREATE ROLE sneaky"],
    ["DROP DATABASE of another tenant", "DROP DATABASE %OTHER%"],
    ["ALTER ROLE of itself", "ALTER ROLE CURRENT_USER SUPERUSER"],
  ];
  for (const [what, template] of FORBIDDEN) {
    it(`${what} fails for a tenant`, async () => {
      const sql = template.replace("%OTHER%", `${platform}_b`).replace("%SELF%", `${platform}_a`).replace("postgres", adminUser());
      const err = await rejectsWith(a.query(sql), Code.PermissionDenied, "QUERY_FAILED");
      assert.equal(err.sqlstate, "42501", err.message);
    });
  }

  it("a tenant cannot let another tenant's role into its database", async () => {
    // Without the grant option PostgreSQL only warns; what matters is that nothing was granted.
    await a.query(`GRANT CONNECT ON DATABASE ${platform}_a TO ${platform}_b`).catch(() => undefined);
    await assert.rejects(connectAs(`${platform}_b`, `${platform}_a`), (err: pg.DatabaseError) => err.code === "42501");
  });

  it("RESET ROLE leaves the tenant as itself", async () => {
    const { rows } = await a.query("SELECT current_user AS user");
    await a.query("RESET ROLE");
    assert.deepEqual((await a.query("SELECT current_user AS user")).rows, rows);
  });

  it("dblink and other untrusted extensions cannot be installed", async () => {
    await assert.rejects(a.query("CREATE EXTENSION dblink"));
  });

  it("a tenant sees none of another tenant's tables", async () => {
    const { rows } = await a.query("SELECT count(*)::int AS n FROM pg_class WHERE relname = 'secret_b'");
    assert.deepEqual(rows, [{ n: 0 }]);
    const info = await a.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 'secret_b'");
    assert.deepEqual(info.rows, [{ n: 0 }]);
    await rejectsWith(a.query("SELECT * FROM secret_b"), Code.InvalidArgument, "QUERY_FAILED");
  });

  it("adopted databases hand objects made by an administrator to the tenant role", async () => {
    // The main database was created and filled by an administrator before the gateway started.
    const direct = await t.pg(`${other}_main`);
    // (made after start here, so adopt again through a fresh gateway below)
    await direct.query("CREATE TABLE legacy (id int PRIMARY KEY, v text)");
    await direct.query("INSERT INTO legacy VALUES (1, 'old')");
    await direct.query("ALTER DATABASE " + pg.escapeIdentifier(`${other}_main`) + " OWNER TO " + pg.escapeIdentifier(adminUser()));
    const second = await startTestGateway({ platforms: 0, overrides: { platformKeys: new Map([[other, [t.keys[other]!]]]), gatewaySecret: t.gatewaySecret } });
    try {
      const client = createClient(second.clientOptions(t.keys[other]!));
      const db = client.platform(other);
      await db.query("INSERT INTO legacy VALUES ($1, $2)", [2, "new"]);
      await db.query("ALTER TABLE legacy ADD COLUMN w int");
      const { rows } = await db.query("SELECT count(*)::int AS n FROM legacy");
      assert.deepEqual(rows, [{ n: 2 }]);
      client.close();
    } finally {
      await second.close();
    }
  });

  it("DropTenant removes the tenant's role too", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "gone");
    await admin.dropTenant(platform, "gone");
    const direct = await t.pg();
    const { rowCount } = await direct.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [`${platform}_gone`]);
    assert.equal(rowCount, 0);
  });

  function adminUser(): string {
    return decodeURIComponent(new URL(t.databaseUrl).username) || "postgres";
  }
});
