// Hostile tenants: functions, operators and casts planted where the administrative role works must never run as it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { inspectAdministrativeRole, OWNER_ROLE } from "../server/src/tenancy/roles.js";
import { asSuperuser, dropPlatformDatabases, pgUrl, randomPlatform, startTestGateway, type TestGateway } from "./helpers/gateway.js";

/**
 * Objects a tenant can make in the `public` schema it owns, each a closer
 * match than the built-in for a call the administrative role might make
 * (`format(text, name, name)` beats `format(text, VARIADIC "any")`, an
 * `=(oid, regclass)` beats `=(oid, oid)`), or a same-signature copy that
 * wins should `public` come before `pg_catalog` in a search path. Every one
 * calls `public.trap`, which records who ran it and, run by anyone allowed
 * to, makes a role named `canary` and a superuser of `victim`.
 */
function plantedObjects(canary: string, victim: string): string[] {
  const q = (role: string) => pg.escapeIdentifier(role);
  const trap = (what: string) => `PERFORM public.trap('${what}')`;
  const sql = [
    "CREATE TABLE public.admin_ran (who name NOT NULL, what text NOT NULL)",
    "GRANT ALL ON public.admin_ran TO PUBLIC",
    `CREATE FUNCTION public.trap(what text) RETURNS void LANGUAGE plpgsql AS $f$
     BEGIN
       BEGIN INSERT INTO public.admin_ran VALUES (current_user, what); EXCEPTION WHEN OTHERS THEN NULL; END;
       BEGIN EXECUTE 'CREATE ROLE ${q(canary).replaceAll("'", "''")}'; EXCEPTION WHEN OTHERS THEN NULL; END;
       BEGIN EXECUTE 'ALTER ROLE ${q(victim).replaceAll("'", "''")} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
     END $f$`,
  ];
  // format() overloads for each argument shape the role handover has used.
  for (const args of [
    "name, name",
    "text, regclass, name",
    "regclass, name",
    "regprocedure, name",
    "regtype, name",
    "text, text",
    "text",
    "name",
    "text, name",
  ]) {
    const n = args.split(",").length;
    const call = Array.from({ length: n }, (_, i) => `$${i + 2}`).join(", ");
    sql.push(
      `CREATE FUNCTION public.format(text, ${args}) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN ${trap("format")}; RETURN pg_catalog.format($1, ${call}); END $f$`,
    );
  }
  for (const [fn, args, body] of [
    ["quote_ident", "name", "pg_catalog.quote_ident($1::text)"],
    ["quote_ident", "text", "pg_catalog.quote_ident($1)"],
    ["quote_literal", "text", "pg_catalog.quote_literal($1)"],
    ["pg_get_userbyid", "oid", "pg_catalog.pg_get_userbyid($1)"],
    ["current_setting", "text", "pg_catalog.current_setting($1)"],
    ["set_config", "text, text, boolean", "pg_catalog.set_config($1, $2, $3)"],
    ["starts_with", "name, text", "pg_catalog.starts_with($1::text, $2)"],
    ["hashtext", "text", "pg_catalog.hashtext($1)"],
  ] as const) {
    const returns = {
      quote_ident: "text",
      quote_literal: "text",
      pg_get_userbyid: "name",
      current_setting: "text",
      set_config: "text",
      starts_with: "boolean",
      hashtext: "integer",
    }[fn];
    sql.push(`CREATE FUNCTION public.${fn}(${args}) RETURNS ${returns} LANGUAGE plpgsql AS $f$ BEGIN ${trap(fn)}; RETURN ${body}; END $f$`);
  }
  // Operators: exact matches where the built-in needs a coercion, and same-signature copies.
  for (const [op, left, right, body] of [
    ["=", "oid", "regclass", "$1 OPERATOR(pg_catalog.=) $2::oid"],
    ["=", "name", "text", "$1::text OPERATOR(pg_catalog.=) $2"],
    ["<>", "name", "name", "$1 OPERATOR(pg_catalog.<>) $2"],
    ["<>", "name", "text", "$1::text OPERATOR(pg_catalog.<>) $2"],
    ["=", '"char"', '"char"', "$1 OPERATOR(pg_catalog.=) $2"],
    ["~~", "name", "text", "$1 OPERATOR(pg_catalog.~~) $2"],
    ["!~~", "name", "text", "$1 OPERATOR(pg_catalog.!~~) $2"],
  ] as const) {
    const fn = `op_${randomBytes(4).toString("hex")}`;
    sql.push(`CREATE FUNCTION public.${fn}(${left}, ${right}) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN ${trap(op)}; RETURN ${body}; END $f$`);
    sql.push(`CREATE OPERATOR public.${op} (LEFTARG = ${left}, RIGHTARG = ${right}, FUNCTION = public.${fn})`);
  }
  // A type of the tenant's with implicit casts to and from a built-in one.
  sql.push("CREATE TYPE public.evil AS (v text)");
  sql.push(
    `CREATE FUNCTION public.evil_from_name(name) RETURNS public.evil LANGUAGE plpgsql AS $f$ BEGIN ${trap("cast")}; RETURN ROW($1::text)::public.evil; END $f$`,
  );
  sql.push("CREATE CAST (name AS public.evil) WITH FUNCTION public.evil_from_name(name) AS IMPLICIT");
  sql.push(`CREATE FUNCTION public.evil_to_text(public.evil) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN ${trap("cast")}; RETURN ($1).v; END $f$`);
  sql.push("CREATE CAST (public.evil AS text) WITH FUNCTION public.evil_to_text(public.evil) AS IMPLICIT");
  // Relations named like the catalogs the handover reads.
  for (const catalog of ["pg_namespace", "pg_class", "pg_proc", "pg_type", "pg_depend", "pg_roles", "pg_database"]) {
    sql.push(`CREATE VIEW public.${catalog} AS SELECT * FROM pg_catalog.${catalog} WHERE public.trap('${catalog}') IS NOT NULL`);
  }
  // Objects of every kind the handover gives to the tenant role.
  sql.push("CREATE SCHEMA extra");
  sql.push("CREATE TABLE extra.t (id int)");
  sql.push("CREATE SEQUENCE public.s");
  sql.push("CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS one");
  sql.push("CREATE DOMAIN public.positive AS int CHECK (VALUE > 0)");
  sql.push("CREATE TYPE public.mood AS ENUM ('ok')");
  return sql;
}

/** Both kinds of administrative role: a superuser, and one with only CREATEDB and CREATEROLE. */
for (const kind of ["superuser", "CREATEDB CREATEROLE"] as const) {
  describe(`hostile tenants against an administrative role that is ${kind === "superuser" ? "a superuser" : "not a superuser"}`, () => {
    let t: TestGateway;
    let platform: string;
    let adminUrl: string;
    let adminRole: string | undefined;
    let canary: string;

    before(async () => {
      adminUrl = pgUrl();
      if (kind !== "superuser") {
        adminRole = randomPlatform("adm");
        const password = randomBytes(16).toString("hex");
        const su = new pg.Client({ connectionString: pgUrl() });
        await su.connect();
        await su.query(`CREATE ROLE ${pg.escapeIdentifier(adminRole)} LOGIN CREATEDB CREATEROLE PASSWORD '${password}'`);
        // The owner role is shared by every gateway on this server, and was likely made by another administrator:
        // from PostgreSQL 16 on, only one with ADMIN OPTION on it may grant it (README: the administrative role).
        await su.query(`DO $$ BEGIN CREATE ROLE ${OWNER_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
        await su.query(`GRANT ${OWNER_ROLE} TO ${pg.escapeIdentifier(adminRole)} WITH ADMIN OPTION`);
        await su.end();
        const url = new URL(pgUrl());
        url.username = adminRole;
        url.password = password;
        adminUrl = url.toString();
      }
      t = await startTestGateway({ platforms: 1, createMain: false, databaseUrl: adminUrl });
      platform = t.platforms[0]!;
      canary = `${platform}_canary`;
    });

    after(async () => {
      // As a superuser: an administrator that is not one may not drop the roles a superuser made here.
      await dropPlatformDatabases(t.platforms, pgUrl());
      await t.close();
      if (adminRole !== undefined) {
        const su = new pg.Client({ connectionString: pgUrl() });
        await su.connect();
        // The catalog database and anything else the role still owns went with the platform's databases.
        await su.query(`DROP OWNED BY ${pg.escapeIdentifier(adminRole)}`);
        await su.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(adminRole)}`);
        await su.end();
      }
    });

    /** What ran where it should not: traps recorded in `database`, a canary role, superuser tenant roles. */
    async function escalations(database?: string): Promise<string[]> {
      const found: string[] = [];
      if (database !== undefined) {
        const { rows } = await asSuperuser(database, (c) =>
          c.query<{ who: string; what: string; n: number }>("SELECT who, what, count(*)::int AS n FROM public.admin_ran GROUP BY 1, 2 ORDER BY 1, 2"),
        );
        found.push(...rows.map((r) => `${r.what} ran ${r.n} times as ${r.who} in ${database}`));
      }
      await asSuperuser("postgres", async (c) => {
        const { rows } = await c.query<{ rolname: string; rolsuper: boolean }>(
          "SELECT rolname, rolsuper FROM pg_roles WHERE starts_with(rolname, $1) AND (rolname = $2 OR rolsuper)",
          [`${platform}_`, canary],
        );
        found.push(...rows.map((r) => (r.rolname === canary ? `the canary role ${canary} was created` : `${r.rolname} became a superuser`)));
      });
      return found;
    }

    it(`the gateway tells ${kind === "superuser" ? "that the administrative role is a superuser" : "that the role has all it needs"}`, async () => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        const found = await inspectAdministrativeRole(client);
        assert.deepEqual(found, { role: adminRole ?? decodeURIComponent(new URL(pgUrl()).username), superuser: kind === "superuser", problems: [] });
      } finally {
        await client.end();
      }
    });

    it("a tenant created from a template whose public schema is full of traps: nothing runs as the administrator", async () => {
      const admin = t.adminClient().admin();
      await admin.createTenant(platform, "tpl");
      const template = t.client().platform(platform).tenant("tpl");
      for (const sql of plantedObjects(canary, `${platform}_tpl`)) await template.query(sql);
      // The traps work: run by the tenant itself, they record it (and fail to escalate).
      await template.query("SELECT public.format('%I %I', 'a'::name, 'b'::name)");
      assert.deepEqual((await template.query("SELECT who, what FROM public.admin_ran")).rows, [{ who: `${platform}_tpl`, what: "format" }]);
      await template.query("DELETE FROM public.admin_ran");

      await admin.createTenant(platform, "copy", { template: `${platform}_tpl` });
      assert.deepEqual(await escalations(`${platform}_copy`), []);
      // The copy works, and its objects are its role's.
      const copy = t.client().platform(platform).tenant("copy");
      const { rows } = await copy.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('public', 'extra') AND pg_get_userbyid(c.relowner) <> current_user`,
      );
      assert.deepEqual(rows, [{ n: 0 }]);
      await copy.query("INSERT INTO extra.t VALUES (1)");

      await admin.dropTenant(platform, "copy");
      assert.deepEqual(await escalations(), []);
    });

    it("an existing database adopted with traps planted by a role that owned its public schema: nothing runs as the administrator", async () => {
      const name = `${platform}_adopted`;
      const legacy = `${platform}_legacy`;
      await asSuperuser("postgres", async (c) => {
        // Made by the administrative role, as an operator would, owned by it and with a role of the old application in it.
        await c.query(
          `CREATE DATABASE ${pg.escapeIdentifier(name)} OWNER ${pg.escapeIdentifier(adminRole ?? (decodeURIComponent(new URL(pgUrl()).username) || "postgres"))}`,
        );
        await c.query(`CREATE ROLE ${pg.escapeIdentifier(legacy)} NOLOGIN`);
        await c.query(`GRANT CREATE ON DATABASE ${pg.escapeIdentifier(name)} TO ${pg.escapeIdentifier(legacy)}`);
        if (adminRole !== undefined) await c.query(`GRANT ${pg.escapeIdentifier(legacy)} TO ${pg.escapeIdentifier(adminRole)}`);
      });
      await asSuperuser(name, async (c) => {
        await c.query(`ALTER SCHEMA public OWNER TO ${pg.escapeIdentifier(legacy)}`);
        await c.query(`SET ROLE ${pg.escapeIdentifier(legacy)}`);
        for (const sql of plantedObjects(canary, name)) await c.query(sql);
      });
      // First use routes to it and adopts it: the role scheme and the handover of every object.
      const tenant = t.client().platform(platform).tenant("adopted");
      const { rows } = await tenant.query("SELECT current_user AS user");
      assert.deepEqual(rows, [{ user: name }]);
      assert.deepEqual(await escalations(name), []);
      const { rows: owners } = await asSuperuser(name, (c) =>
        c.query<{ owner: string }>("SELECT DISTINCT pg_get_userbyid(p.proowner) AS owner FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"),
      );
      assert.deepEqual(owners, [{ owner: name }]);

      await t.adminClient().admin().dropTenant(platform, "adopted");
      assert.deepEqual(await escalations(), []);
    });
  });
}

describe("inspectAdministrativeRole", () => {
  it("names the privileges an administrative role lacks", async () => {
    const role = randomPlatform("adm");
    const su = new pg.Client({ connectionString: pgUrl() });
    await su.connect();
    try {
      await su.query(`CREATE ROLE ${pg.escapeIdentifier(role)} NOLOGIN CREATEDB`);
      await su.query(`SET ROLE ${pg.escapeIdentifier(role)}`);
      const found = await inspectAdministrativeRole(su);
      assert.equal(found.superuser, false);
      assert.deepEqual(found.problems, [`the administrative role "${role}" lacks CREATEROLE: tenant roles cannot be made or adopted`]);
    } finally {
      await su.query("RESET ROLE");
      await su.query(`DROP ROLE ${pg.escapeIdentifier(role)}`);
      await su.end();
    }
  });
});
