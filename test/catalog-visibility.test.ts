// Less to see for a tenant: other tenants' database and role names are closed to its SQL, while what ORMs introspect still works.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Code, type Database } from "../client-sdk/src/index.js";
import { OWNER_ROLE } from "../server/src/tenancy/roles.js";
import { rejectsWith } from "./helpers/assert-error.js";
import { runCli } from "./helpers/cli.js";
import { asSuperuser, dropPlatformDatabases, pgUrl, randomPlatform, startTestGateway, type TestGateway } from "./helpers/gateway.js";
import { keptLog } from "./helpers/kept-log.js";
import { waitFor } from "./helpers/wait.js";

/** Whether PUBLIC may still read pg_roles in a database (a stand-in for the whole set). */
function rolesOpen(database: string): Promise<boolean> {
  return asSuperuser(
    database,
    async (c) => (await c.query<{ open: boolean }>("SELECT has_table_privilege('public', 'pg_catalog.pg_roles', 'SELECT') AS open")).rows[0]!.open,
  );
}

/**
 * Every relation of pg_catalog and information_schema the tenant may read,
 * read whole as text through the gateway: the names of `others` found in
 * which (those the tenant cannot read at all are skipped).
 */
async function namesSeen(db: Database, others: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ rel: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm')
        AND has_any_column_privilege(c.oid, 'SELECT') ORDER BY 1`,
  );
  assert.ok(rows.length > 100, `only ${rows.length} relations readable`);
  const seen: string[] = [];
  for (const { rel } of rows) {
    let text: string;
    try {
      // Column-privileged tables (pg_subscription's) cannot be read whole: their readable columns are few and name nothing here.
      text = (await db.query<{ t: string }>(`SELECT coalesce(string_agg(x::text, ' '), '') AS t FROM ${rel} x`)).rows[0]!.t;
    } catch {
      continue;
    }
    for (const name of others) if (text.includes(name)) seen.push(`${name} in ${rel}`);
  }
  return seen;
}

describe("catalog visibility with a superuser administrator", () => {
  let t: TestGateway;
  let platform: string;
  let other: string;
  let a: Database;
  let others: string[];

  before(async () => {
    t = await startTestGateway({ platforms: 2 });
    [platform, other] = t.platforms as [string, string];
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "a");
    await admin.createTenant(platform, "b");
    await admin.createTenant(other, "c");
    a = t.client(platform).platform(platform).tenant("a");
    // Open connections of the others, for pg_stat_activity to show, would it be readable.
    await t.client(platform).platform(platform).tenant("b").query("SELECT 1");
    await t.client(other).platform(other).tenant("c").query("SELECT 1");
    others = [`${platform}_b`, `${other}_c`, `${other}_main`];
  });
  after(() => t.close());

  const CLOSED: [string, string][] = [
    ["pg_database", "SELECT datname FROM pg_database"],
    ["pg_roles", "SELECT rolname FROM pg_roles"],
    ["pg_user", "SELECT usename FROM pg_user"],
    ["pg_group", "SELECT groname FROM pg_group"],
    ["pg_auth_members", "SELECT roleid FROM pg_auth_members"],
    ["pg_db_role_setting", "SELECT setrole FROM pg_db_role_setting"],
    ["pg_shdescription", "SELECT description FROM pg_shdescription"],
    ["shobj_description", "SELECT shobj_description(oid, 'pg_authid') FROM (SELECT 10::oid AS oid) r"],
    ["pg_shdepend", "SELECT refobjid FROM pg_shdepend"],
    ["pg_stat_activity", "SELECT datname, usename FROM pg_stat_activity"],
    ["pg_stat_database", "SELECT datname FROM pg_stat_database"],
    ["pg_stat_database_conflicts", "SELECT datname FROM pg_stat_database_conflicts"],
    ["pg_stat_progress_vacuum", "SELECT datname FROM pg_stat_progress_vacuum"],
    ["pg_prepared_xacts", "SELECT database, owner FROM pg_prepared_xacts"],
    ["pg_replication_slots", "SELECT database FROM pg_replication_slots"],
    ["pg_stat_get_activity", "SELECT datid, usesysid FROM pg_stat_get_activity(NULL)"],
    ["pg_stat_get_backend_userid", "SELECT pg_stat_get_backend_userid(b) FROM pg_stat_get_backend_idset() b"],
    ["pg_database_size(oid)", "SELECT pg_database_size(1::oid)"],
  ];
  for (const [what, sql] of CLOSED) {
    it(`${what} is refused to a tenant (permission denied)`, async () => {
      const err = await rejectsWith(a.query(sql), Code.PermissionDenied, "QUERY_FAILED");
      assert.equal(err.sqlstate, "42501", err.message);
    });
  }

  it("no catalog or information_schema view a tenant can read names another tenant's database or role", async () => {
    assert.deepEqual(await namesSeen(a, others), []);
  });

  it("a database whose catalogs were open again (an older gateway's) is closed at the next start", async () => {
    const database = `${platform}_a`;
    await asSuperuser(database, (c) => c.query("GRANT SELECT ON pg_catalog.pg_roles, pg_catalog.pg_stat_activity TO PUBLIC"));
    // The sweep above can fail: with pg_roles open it finds every other tenant's role.
    const seen = await namesSeen(a, others);
    assert.ok(
      others.every((name) => seen.includes(`${name} in pg_catalog.pg_roles`)),
      seen.join("; "),
    );
    const second = await startTestGateway({
      platforms: 0,
      overrides: { platformKeys: new Map([[platform, [t.keys[platform]!]]]), gatewaySecret: t.gatewaySecret },
    });
    try {
      await waitFor(async () => !(await rolesOpen(database)), 20_000, "pg_roles closed again");
      await rejectsWith(a.query("SELECT count(*) FROM pg_stat_activity"), Code.PermissionDenied, "QUERY_FAILED");
    } finally {
      await second.close();
    }
  });

  it("a tenant created from a template is closed too, and the template's own tenant still works", async () => {
    const admin = t.adminClient().admin();
    await admin.createTenant(platform, "copy", { template: `${platform}_a` });
    assert.equal(await rolesOpen(`${platform}_copy`), false);
    const copy = t.client(platform).platform(platform).tenant("copy");
    assert.deepEqual((await copy.query("SELECT current_user AS u")).rows, [{ u: `${platform}_copy` }]);
    await admin.dropTenant(platform, "copy");
  });

  it("what ORMs introspect still works for a tenant", async () => {
    await a.query("CREATE TYPE mood AS ENUM ('ok', 'sad')");
    await a.query("CREATE TABLE owners (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE)");
    await a.query(
      "CREATE TABLE pets (id serial PRIMARY KEY, owner_id bigint NOT NULL REFERENCES owners (id), feeling mood DEFAULT 'ok', born date, CHECK (born > '2000-01-01'))",
    );
    await a.query("CREATE INDEX pets_owner ON pets (owner_id)");
    await a.query("COMMENT ON TABLE pets IS 'animals'");
    await a.query("COMMENT ON COLUMN pets.born IS 'birthday'");
    await a.query("CREATE VIEW pet_names AS SELECT id FROM pets");
    await a.query("CREATE FUNCTION pet_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM pets'");

    // Connection checks.
    const { rows: who } = await a.query(
      "SELECT current_database() AS db, current_user AS u, session_user AS s, current_schema() AS schema, version() LIKE 'PostgreSQL %' AS pg, current_setting('server_version_num')::int >= 150000 AS v15, pg_is_in_recovery() AS recovery",
    );
    assert.deepEqual(who, [{ db: `${platform}_a`, u: `${platform}_a`, s: `${platform}_a`, schema: "public", pg: true, v15: true, recovery: false }]);
    assert.deepEqual((await a.query("SHOW server_encoding")).rows, [{ server_encoding: "UTF8" }]);
    assert.deepEqual((await a.query("SELECT pg_database_size(current_database()) > 0 AS sized")).rows, [{ sized: true }]);
    assert.deepEqual((await a.query("SELECT role_name FROM information_schema.enabled_roles")).rows, [{ role_name: `${platform}_a` }]);

    // Kysely's PostgresIntrospector: pg_attribute joined with pg_class, pg_namespace and pg_type.
    const { rows: kysely } = await a.query(
      `SELECT c.relname AS table, c.relkind AS table_type, ns.nspname AS schema, a.attname AS column, a.attnotnull AS not_null, a.atthasdef AS has_default,
              typ.typname AS type, dtns.nspname AS type_schema, col_description(a.attrelid, a.attnum) AS column_description,
              obj_description(a.attrelid, 'pg_class') AS table_description,
              pg_get_serial_sequence(quote_ident(ns.nspname) || '.' || quote_ident(c.relname), a.attname) IS NOT NULL AS auto_incrementing
         FROM pg_catalog.pg_attribute a
         JOIN pg_catalog.pg_class c ON a.attrelid = c.oid
         JOIN pg_catalog.pg_namespace ns ON c.relnamespace = ns.oid
         JOIN pg_catalog.pg_type typ ON a.atttypid = typ.oid
         JOIN pg_catalog.pg_namespace dtns ON typ.typnamespace = dtns.oid
        WHERE c.relkind IN ('r', 'v', 'p') AND ns.nspname !~ '^pg_' AND ns.nspname <> 'information_schema' AND a.attnum >= 0 AND NOT a.attisdropped
          AND c.relname = 'pets'
        ORDER BY a.attnum`,
    );
    assert.deepEqual(
      kysely.map((r) => [r.column, r.type, r.type_schema, r.not_null, r.has_default, r.auto_incrementing, r.column_description, r.table_description]),
      [
        ["id", "int4", "pg_catalog", true, true, true, null, "animals"],
        ["owner_id", "int8", "pg_catalog", true, false, false, null, "animals"],
        ["feeling", "mood", "public", false, true, false, null, "animals"],
        ["born", "date", "pg_catalog", false, false, false, "birthday", "animals"],
      ],
    );
    assert.deepEqual((await a.query("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = 'public'")).rows, [{ nspname: "public" }]);

    // information_schema, as Knex, Sequelize and TypeORM read it.
    const { rows: tables } = await a.query("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    assert.deepEqual(tables, [
      { table_name: "owners", table_type: "BASE TABLE" },
      { table_name: "pet_names", table_type: "VIEW" },
      { table_name: "pets", table_type: "BASE TABLE" },
    ]);
    const { rows: columns } = await a.query(
      "SELECT column_name, data_type, udt_name, is_nullable, column_default FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'owners' ORDER BY ordinal_position",
    );
    assert.deepEqual(columns, [
      { column_name: "id", data_type: "bigint", udt_name: "int8", is_nullable: "NO", column_default: "nextval('owners_id_seq'::regclass)" },
      { column_name: "name", data_type: "text", udt_name: "text", is_nullable: "NO", column_default: null },
    ]);
    const { rows: keys } = await a.query(
      `SELECT tc.constraint_type, kcu.column_name, ccu.table_name AS references_table
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
         LEFT JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name AND tc.constraint_type = 'FOREIGN KEY'
        WHERE tc.table_name = 'pets' AND tc.constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY tc.constraint_type`,
    );
    assert.deepEqual(keys, [
      { constraint_type: "FOREIGN KEY", column_name: "owner_id", references_table: "owners" },
      { constraint_type: "PRIMARY KEY", column_name: "id", references_table: null },
    ]);

    // Prisma's schema describer: tables with their comments, columns through information_schema and pg_attribute,
    // constraints, indexes, enums, views, routines, extensions and sequences.
    const { rows: prismaTables } = await a.query(
      `SELECT tbl.relname AS table_name, tbl.relrowsecurity AS rls, obj_description(tbl.oid, 'pg_class') AS description
         FROM pg_class tbl JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
        WHERE tbl.relkind IN ('r', 'p', 'f') AND NOT tbl.relispartition AND ns.nspname = ANY ($1) ORDER BY 1`,
      [["public"]],
    );
    assert.deepEqual(prismaTables, [
      { table_name: "owners", rls: false, description: null },
      { table_name: "pets", rls: false, description: "animals" },
    ]);
    const { rows: prismaColumns } = await a.query(
      `SELECT info.column_name, format_type(att.atttypid, att.atttypmod) AS formatted_type, pg_get_expr(def.adbin, def.adrelid) AS column_default,
              info.is_identity, col_description(att.attrelid, info.ordinal_position::int) AS description
         FROM information_schema.columns info
         JOIN pg_class cls ON cls.relname = info.table_name
         JOIN pg_namespace ns ON ns.oid = cls.relnamespace AND ns.nspname = info.table_schema
         JOIN pg_attribute att ON att.attrelid = cls.oid AND att.attname = info.column_name
         LEFT JOIN pg_attrdef def ON def.adrelid = att.attrelid AND def.adnum = att.attnum
        WHERE info.table_schema = ANY ($1) AND info.table_name = 'pets' ORDER BY info.ordinal_position`,
      [["public"]],
    );
    assert.deepEqual(prismaColumns, [
      { column_name: "id", formatted_type: "integer", column_default: "nextval('pets_id_seq'::regclass)", is_identity: "NO", description: null },
      { column_name: "owner_id", formatted_type: "bigint", column_default: null, is_identity: "NO", description: null },
      { column_name: "feeling", formatted_type: "mood", column_default: "'ok'::mood", is_identity: "NO", description: null },
      { column_name: "born", formatted_type: "date", column_default: null, is_identity: "NO", description: "birthday" },
    ]);
    // (From PostgreSQL 18, NOT NULL constraints are listed too: contype 'n'.)
    const { rows: constraints } = await a.query(
      "SELECT conname, contype, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = 'public.pets'::regclass AND contype IN ('c', 'f', 'p', 'u') ORDER BY contype, conname",
    );
    assert.deepEqual(
      constraints.map((r) => r.contype),
      ["c", "f", "p"],
    );
    const { rows: indexes } = await a.query(
      `SELECT i.relname AS index, ix.indisunique AS is_unique, ix.indisprimary AS is_primary, pg_get_indexdef(ix.indexrelid) LIKE 'CREATE %' AS def
         FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid WHERE ix.indrelid = 'public.pets'::regclass ORDER BY 1`,
    );
    assert.deepEqual(indexes, [
      { index: "pets_owner", is_unique: false, is_primary: false, def: true },
      { index: "pets_pkey", is_unique: true, is_primary: true, def: true },
    ]);
    const { rows: enums } = await a.query(
      "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text AS labels FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' GROUP BY 1",
    );
    assert.deepEqual(enums, [{ typname: "mood", labels: "{ok,sad}" }]);
    const { rows: views } = await a.query("SELECT viewname, viewowner FROM pg_views WHERE schemaname = 'public'");
    assert.deepEqual(views, [{ viewname: "pet_names", viewowner: `${platform}_a` }]);
    const { rows: routines } = await a.query(
      "SELECT p.proname, pg_get_functiondef(p.oid) LIKE 'CREATE OR REPLACE FUNCTION%' AS def FROM pg_proc p JOIN pg_namespace n ON p.pronamespace = n.oid JOIN pg_language l ON p.prolang = l.oid WHERE n.nspname = 'public' AND l.lanname = 'sql'",
    );
    assert.deepEqual(routines, [{ proname: "pet_count", def: true }]);
    assert.deepEqual((await a.query("SELECT extname FROM pg_extension ext JOIN pg_namespace pn ON ext.extnamespace = pn.oid WHERE extname = 'plpgsql'")).rows, [
      { extname: "plpgsql" },
    ]);
    const { rows: sequences } = await a.query("SELECT sequencename, sequenceowner FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1");
    assert.deepEqual(sequences, [
      { sequencename: "owners_id_seq", sequenceowner: `${platform}_a` },
      { sequencename: "pets_id_seq", sequenceowner: `${platform}_a` },
    ]);

    // Privileges and owners, as psql's \dt and migration tools ask for them.
    const { rows: privileges } = await a.query(
      "SELECT has_table_privilege('public.pets', 'INSERT') AS ins, has_schema_privilege('public', 'CREATE') AS create, pg_get_userbyid(c.relowner) AS owner, tableowner FROM pg_class c JOIN pg_tables t ON t.tablename = c.relname WHERE c.relname = 'pets'",
    );
    assert.deepEqual(privileges, [{ ins: true, create: true, owner: `${platform}_a`, tableowner: `${platform}_a` }]);
    // Prisma Migrate's lock, and pg_locks, which migration tools read (it shows database OIDs, never names).
    assert.deepEqual((await a.query("SELECT pg_try_advisory_lock(72707369) AS locked")).rows, [{ locked: true }]);
    const { rows: locks } = await a.query(
      "SELECT mode, database = (SELECT oid FROM pg_namespace WHERE false) AS never FROM pg_locks WHERE pid = pg_backend_pid() AND relation = 'pg_catalog.pg_locks'::regclass",
    );
    assert.deepEqual(locks, [{ mode: "AccessShareLock", never: null }]);
  });
});

describe("catalog visibility with an administrator that is not a superuser", () => {
  let t: TestGateway;
  let platform: string;
  let adminRole: string;
  let adminUrl: string;
  const kept = keptLog("info");

  before(async () => {
    adminRole = randomPlatform("adm");
    const password = randomBytes(16).toString("hex");
    await asSuperuser("postgres", async (su) => {
      await su.query(`CREATE ROLE ${pg.escapeIdentifier(adminRole)} LOGIN CREATEDB CREATEROLE PASSWORD '${password}'`);
      await su.query(`DO $$ BEGIN CREATE ROLE ${OWNER_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
      await su.query(`GRANT ${OWNER_ROLE} TO ${pg.escapeIdentifier(adminRole)} WITH ADMIN OPTION`);
    });
    const url = new URL(pgUrl());
    url.username = adminRole;
    url.password = password;
    adminUrl = url.toString();
    // A main database made before the start, by an operator: the start's report counts it.
    t = await startTestGateway({ platforms: 1, databaseUrl: adminUrl, overrides: { logger: kept.logger } });
    platform = t.platforms[0]!;
  });

  after(async () => {
    await dropPlatformDatabases(t.platforms, pgUrl());
    await t.close();
    await asSuperuser("postgres", async (su) => {
      await su.query(`DROP OWNED BY ${pg.escapeIdentifier(adminRole)}`);
      await su.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(adminRole)}`);
    });
  });

  it("says once at start that it cannot close the catalogs, where they are open, and what to run", async () => {
    let line: { msg: string; databases: number; of: number } | undefined;
    await waitFor(() => (line = kept.lines.map((l) => JSON.parse(l)).find((l) => l.msg?.includes("hide-catalogs"))) !== undefined, 20_000, "the warning");
    assert.match(line!.msg, new RegExp(`the administrative role "${adminRole}" is not a superuser`));
    assert.match(line!.msg, /pg_database, pg_roles, pg_stat_activity/);
    assert.equal(line!.databases, 1);
    assert.equal(line!.of, 1);
    assert.equal(kept.lines.filter((l) => l.includes("hide-catalogs")).length, 1);
  });

  it("leaves a new tenant's catalogs open, and `db-gateway hide-catalogs` run by a superuser closes them", async () => {
    await t.adminClient().admin().createTenant(platform, "x");
    const database = `${platform}_x`;
    const tenant = t.client().platform(platform).tenant("x");
    // As PostgreSQL allows: this role may not change the catalogs' privileges.
    assert.ok((await tenant.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_roles")).rows[0]!.n > 0);

    const notSuperuser = await runCli(["hide-catalogs", "--database-url", adminUrl, "--database", database]);
    assert.equal(notSuperuser.code, 1, notSuperuser.stderr);
    assert.match(notSuperuser.stderr, /not a superuser/);
    const check = await runCli(["hide-catalogs", "--database-url", adminUrl, "--database", database, "--check", "--json"]);
    assert.equal(check.code, 1, check.stderr);
    const found = JSON.parse(check.stdout) as { databases: { database: string; open: string[] }[] };
    assert.equal(found.databases[0]!.database, database);
    assert.ok(found.databases[0]!.open.includes("TABLE pg_catalog.pg_roles"), check.stdout);

    // Through a URL naming another of the test's databases, which must be left as it is.
    const su = new URL(pgUrl());
    su.pathname = `/${platform}_main`;
    const hide = await runCli(["hide-catalogs", "--database-url", su.toString(), "--database", database]);
    assert.equal(hide.code, 0, hide.stderr);
    assert.match(hide.stdout, new RegExp(`^${database}: closed .*pg_roles`));
    await rejectsWith(tenant.query("SELECT rolname FROM pg_roles"), Code.PermissionDenied, "QUERY_FAILED");
    const again = await runCli(["hide-catalogs", "--database-url", su.toString(), "--database", database]);
    assert.equal(again.stdout.trim(), `${database}: closed already`);
    assert.equal(await rolesOpen(`${platform}_main`), true);
    const checked = await runCli(["hide-catalogs", "--database-url", adminUrl, "--database", database, "--check"]);
    assert.equal(checked.code, 0, checked.stderr);
    // The tenant's own work goes on.
    await tenant.query("CREATE TABLE t (id int)");
    assert.deepEqual((await tenant.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 't'")).rows, [{ n: 1 }]);
  });
});
