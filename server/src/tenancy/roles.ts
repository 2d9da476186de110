// Each database's own login role: its rights, and its password derived from the gateway secret; what the administrative role may lack.
import { createHmac, pbkdf2Sync, randomBytes, createHash } from "node:crypto";
import type pg from "pg";
import { DatabaseError, escapeIdentifier, escapeLiteral } from "pg";
import { GatewayError } from "../errors.js";
import { hideCatalogs } from "./catalog-visibility.js";
import { resetRecordGrants } from "./migration-record.js";
import { OWNER_ROLE } from "./naming.js";

export { OWNER_ROLE };

/**
 * The only search path the administrative role works with. A tenant owns the
 * `public` schema of its database and may plant functions, operators and
 * casts there that resolve ahead of the built-ins for a given call; run by
 * the administrator, they would run with its rights (a superuser's, or
 * CREATEROLE's). `pg_catalog` alone, then the session's own temporary schema
 * named last so that it is searched for nothing ahead of the catalog.
 */
export const ADMIN_SEARCH_PATH = "pg_catalog, pg_temp";

/** Marks the roles the gateway made, so that it never takes over or drops anyone else's. */
const ROLE_COMMENT_PREFIX = "db-gateway: login role of database ";

/**
 * Each database gets its own login role, named like the database, and the
 * gateway runs that database's SQL as that role only. The role is
 * NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION with a
 * connection limit; it may CONNECT to and create TEMP tables and schemas in
 * its own database, and owns the `public` schema and every object there. The
 * database itself belongs to the non-login `dbgateway_owner`, and PUBLIC
 * may not connect to it, so no tenant role can reach another tenant's data.
 *
 * Passwords are never stored: each is HMAC-SHA256(gateway secret, role name),
 * derived again when needed, and PostgreSQL is only ever sent its SCRAM
 * verifier, so the password appears in no statement and no server log.
 */
export class TenantRoles {
  #adminIsSuperuser: boolean | undefined;

  constructor(
    private readonly secret: string,
    private readonly connectionLimit: number,
  ) {}

  /** The login role of a database. */
  roleName(database: string): string {
    return database;
  }

  /** The role's password, derived from the gateway secret. */
  password(role: string): string {
    return createHmac("sha256", this.secret).update(`db-gateway role password\0${role}`).digest("base64url");
  }

  /** The databases among `databases` that lack their role or are not owned by the owner role. */
  async unprovisioned(admin: pg.ClientBase, databases: readonly string[]): Promise<string[]> {
    const { rows } = await admin.query<{ datname: string }>(
      `SELECT d.datname FROM pg_database d
        WHERE d.datname = ANY($1::text[])
          AND (pg_catalog.pg_get_userbyid(d.datdba) <> $2 OR NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = d.datname))`,
      [databases, OWNER_ROLE],
    );
    return rows.map((r) => r.datname);
  }

  /**
   * Brings a database under the scheme, idempotently: owner role, login role
   * (created, or repaired if it is one of ours), ownership and privileges, and
   * inside the database every object handed to the login role (objects copied
   * from a template, or made by an administrator before) and, when the
   * administrative role is a superuser, the catalogs that name other
   * databases and roles closed to PUBLIC (`hideCatalogs`). `admin` is an
   * administrative connection; `connectTo` opens one to the database itself.
   */
  async provision(admin: pg.ClientBase, database: string, connectTo: (database: string) => Promise<pg.Client>): Promise<void> {
    const role = this.roleName(database);
    const superuser = await this.#adminSuperuser(admin);
    await ensureOwnerRole(admin);
    const existing = await admin.query<{ comment: string | null; privileged: boolean }>(
      "SELECT shobj_description(oid, 'pg_authid') AS comment, rolsuper OR rolbypassrls OR rolreplication AS privileged FROM pg_roles WHERE rolname = $1",
      [role],
    );
    const found = existing.rows[0];
    if (found !== undefined && (found.comment !== ROLE_COMMENT_PREFIX + database || found.privileged)) {
      throw new GatewayError("ROLE_CONFLICT", `a role named "${role}" exists and was not made by db-gateway`, { metadata: { database } });
    }
    const r = escapeIdentifier(role);
    if (found === undefined) await createIgnoringDuplicate(admin, `CREATE ROLE ${r} LOGIN`);
    // Only a superuser may name SUPERUSER, BYPASSRLS or REPLICATION at all; a role made by any other
    // administrator has none of them, and one that has is refused above.
    const superuserOnly = superuser ? "NOSUPERUSER NOBYPASSRLS NOREPLICATION " : "";
    await admin.query(
      `ALTER ROLE ${r} WITH LOGIN ${superuserOnly}NOCREATEDB NOCREATEROLE NOINHERIT ` +
        `CONNECTION LIMIT ${this.connectionLimit} PASSWORD ${escapeLiteral(scramVerifier(this.password(role)))}`,
    );
    await admin.query(`COMMENT ON ROLE ${r} IS ${escapeLiteral(ROLE_COMMENT_PREFIX + database)}`);
    if (!superuser) {
      // Changing owners needs the privileges of both roles.
      await admin.query(`GRANT ${r}, ${escapeIdentifier(OWNER_ROLE)} TO CURRENT_USER`);
    }
    const d = escapeIdentifier(database);
    await admin.query(`ALTER DATABASE ${d} OWNER TO ${escapeIdentifier(OWNER_ROLE)}`);
    await admin.query(`REVOKE ALL ON DATABASE ${d} FROM PUBLIC`);
    await admin.query(`GRANT CONNECT, TEMPORARY, CREATE ON DATABASE ${d} TO ${r}`);

    // Inside the database, its tenant's objects surround the administrator: see `ADMIN_SEARCH_PATH`.
    const inside = await connectTo(database);
    try {
      await inside.query("BEGIN");
      await inside.query(`SET LOCAL search_path TO ${ADMIN_SEARCH_PATH}`);
      await inside.query("SELECT pg_catalog.set_config('dbgateway.role', $1, true)", [role]);
      // Changing an owner moves the old owner's privileges to the new one, so the
      // template's role keeps nothing here. (DROP OWNED would be wrong: it also
      // revokes the template role's privileges on shared objects, such as
      // CONNECT on the template database itself.)
      await inside.query(GIVE_OBJECTS_TO_ROLE);
      // A copy of a template that was migrated: its record is this database's role's to read, and no longer the template's.
      await resetRecordGrants(inside, role);
      // Only a superuser may change the catalogs' privileges; without one, see the start's report (gateway.ts).
      if (superuser) await hideCatalogs(inside);
      await inside.query("COMMIT");
    } finally {
      await inside.end();
    }
  }

  /**
   * Sets the connection limit of the login roles of `databases` (ours only)
   * to the current one where it differs: it follows the settings (pool size,
   * gateway instances) of the gateway that starts or adopts last. A role that
   * cannot be changed (from PostgreSQL 16, a CREATEROLE administrator may
   * alter only roles it has ADMIN OPTION on; one dropped meanwhile) keeps its
   * limit and is returned with PostgreSQL's error: the pool waits out its refusals.
   */
  async syncConnectionLimits(admin: pg.ClientBase, databases: readonly string[]): Promise<{ role: string; error: unknown }[]> {
    const { rows } = await admin.query<{ rolname: string }>(
      `SELECT r.rolname FROM pg_catalog.pg_roles r
        WHERE r.rolname = ANY($1::text[]) AND r.rolconnlimit <> $2
          AND pg_catalog.shobj_description(r.oid, 'pg_authid') = $3 || r.rolname`,
      [databases.map((d) => this.roleName(d)), this.connectionLimit, ROLE_COMMENT_PREFIX],
    );
    const failed: { role: string; error: unknown }[] = [];
    for (const { rolname } of rows) {
      try {
        await admin.query(`ALTER ROLE ${escapeIdentifier(rolname)} CONNECTION LIMIT ${this.connectionLimit}`);
      } catch (error) {
        if (!(error instanceof DatabaseError)) throw error; // the connection itself: the caller's to handle
        failed.push({ role: rolname, error });
      }
    }
    return failed;
  }

  /** Drops a database's login role, if it is one of ours. Call after the database is dropped. */
  async dropRole(admin: pg.ClientBase, database: string): Promise<void> {
    const role = this.roleName(database);
    const { rows } = await admin.query<{ comment: string | null }>("SELECT shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname = $1", [
      role,
    ]);
    if (rows[0]?.comment === ROLE_COMMENT_PREFIX + database) await admin.query(`DROP ROLE IF EXISTS ${escapeIdentifier(role)}`);
  }

  async #adminSuperuser(admin: pg.ClientBase): Promise<boolean> {
    this.#adminIsSuperuser ??= (await inspectAdministrativeRole(admin)).superuser;
    return this.#adminIsSuperuser;
  }
}

/**
 * What an operator should know of the administrative role: `superuser` when
 * it is one (it need not be: CREATEDB and CREATEROLE are all the gateway
 * uses, and a tenant that ever made it run its code would gain everything),
 * and `problems`, the privileges it lacks.
 */
export async function inspectAdministrativeRole(admin: pg.ClientBase | pg.Pool): Promise<{ role: string; superuser: boolean; problems: string[] }> {
  const { rows } = await admin.query<{ role: string; rolsuper: boolean; rolcreatedb: boolean; rolcreaterole: boolean }>(
    "SELECT current_user AS role, rolsuper, rolcreatedb, rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user",
  );
  const found = rows[0]!;
  const problems: string[] = [];
  if (!found.rolsuper) {
    if (!found.rolcreatedb) problems.push(`the administrative role "${found.role}" lacks CREATEDB: CreateTenant will fail`);
    if (!found.rolcreaterole) problems.push(`the administrative role "${found.role}" lacks CREATEROLE: tenant roles cannot be made or adopted`);
  }
  return { role: found.role, superuser: found.rolsuper, problems };
}

async function ensureOwnerRole(admin: pg.ClientBase): Promise<void> {
  const { rowCount } = await admin.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [OWNER_ROLE]);
  if (rowCount === 0) await createIgnoringDuplicate(admin, `CREATE ROLE ${escapeIdentifier(OWNER_ROLE)} NOLOGIN`);
}

/** CREATE ROLE racing another gateway (or call) for the same name: the loser carries on. */
async function createIgnoringDuplicate(admin: pg.ClientBase, sql: string): Promise<void> {
  try {
    await admin.query(sql);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== "42710" && code !== "23505") throw err;
  }
}

/**
 * Runs inside a database as an administrator: gives every user object (tables,
 * views, sequences, routines, types, schemas; not extension members, not
 * sequences that follow their table, and not the owner role's own: the
 * migrations' record) to the role in `dbgateway.role`. Run with
 * `ADMIN_SEARCH_PATH` only: the database's own schemas hold functions and
 * operators its tenant may have made to match these calls more closely than
 * the built-ins do (a `public.format(text, name, name)`, an `=(oid, regclass)`).
 * Its function calls and catalogs are qualified as well (its operators rely
 * on the path); the statements it builds name every object with its schema
 * (regclass, regprocedure and regtype print them so under that path), and
 * changing an owner runs no function of the object's.
 */
const GIVE_OBJECTS_TO_ROLE = `
DO $$
DECLARE
  target name := pg_catalog.current_setting('dbgateway.role');
  gateway name := '${OWNER_ROLE}';
  r record;
BEGIN
  FOR r IN
    SELECT n.nspname FROM pg_catalog.pg_namespace n
     WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
       AND pg_catalog.pg_get_userbyid(n.nspowner) NOT IN (target, gateway)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objid = n.oid AND d.deptype = 'e')
  LOOP
    EXECUTE pg_catalog.format('ALTER SCHEMA %I OWNER TO %I', r.nspname, target);
  END LOOP;
  FOR r IN
    SELECT c.oid::pg_catalog.regclass AS obj, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       AND pg_catalog.pg_get_userbyid(c.relowner) NOT IN (target, gateway)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
  LOOP
    EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
      CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      r.obj, target);
  END LOOP;
  FOR r IN
    SELECT p.oid::pg_catalog.regprocedure AS obj FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
       AND pg_catalog.pg_get_userbyid(p.proowner) NOT IN (target, gateway)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO %I', r.obj, target);
  END LOOP;
  FOR r IN
    SELECT t.oid::pg_catalog.regtype AS obj FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
       AND (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c'))
       AND pg_catalog.pg_get_userbyid(t.typowner) NOT IN (target, gateway)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE pg_catalog.format('ALTER TYPE %s OWNER TO %I', r.obj, target);
  END LOOP;
END
$$`;

/**
 * The SCRAM-SHA-256 verifier of a password (RFC 5802/7677, as PostgreSQL
 * stores it), so that the password itself is never sent to the server.
 *
 * Few PBKDF2 iterations on purpose: stretching protects guessable passwords,
 * and these are 256-bit HMAC outputs. PostgreSQL's default of 4096 made every
 * new connection costly in the gateway's CPU (BENCHMARKS.md, tenants).
 */
export function scramVerifier(password: string, iterations = 16): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password.normalize("NFKC"), salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}
