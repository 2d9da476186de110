/** `db-gateway hide-catalogs`: a superuser closes to tenant SQL the catalogs that name other databases and roles, where the gateway's own role cannot. */
import pg from "pg";
import { catalogsVisible, hideCatalogs } from "../tenancy/catalog-visibility.js";
import { databaseLockKey } from "../tenancy/naming.js";
import { ADMIN_SEARCH_PATH, inspectAdministrativeRole, OWNER_ROLE } from "../tenancy/roles.js";
import { EXIT_FAILED, EXIT_OK, fail, output, parseCommandArgs, type Command } from "./command.js";

/** What was found open (and closed, unless --check) in one database. */
interface DatabaseReport {
  database: string;
  open: string[];
}

export const hideCatalogsCommand: Command = {
  name: "hide-catalogs",
  summary: "as a superuser: hide other tenants' databases and roles from tenant SQL",
  help: `Usage: db-gateway hide-catalogs [--database-url URL] [--database NAME]... [--check] [--json]

Revokes from PUBLIC, in each database, SELECT on the catalogs and statistics
views that name other databases and roles (pg_database, pg_roles, pg_user,
pg_auth_members, pg_shdescription, pg_stat_activity, pg_stat_database …) and
EXECUTE on the functions behind them (README: Security). PostgreSQL lets only
a superuser change them: the gateway does it itself when its administrative
role is one, and otherwise a superuser runs this once, and again after
databases were created from a template that has them open.

By default: template1 (CreateTenant copies it, so databases made later start
closed) and every database owned by ${OWNER_ROLE}. Idempotent.

Options:
  --database-url URL  a superuser's PostgreSQL URL (default: node-postgres's
                      PG* environment, PGHOST, PGUSER, PGPASSWORD …)
  --database NAME     only this database (repeatable)
  --check             change nothing: list what is open, exit 1 if anything is
  --json              {databases: [{database, open}]}
  -h, --help          this text`,
  async run(args) {
    const { values } = parseCommandArgs(args, {
      "database-url": { type: "string" },
      database: { type: "string", multiple: true },
      check: { type: "boolean" },
    });
    const connection: pg.ClientConfig = {
      ...(values["database-url"] !== undefined ? { connectionString: values["database-url"] } : {}),
      // As in the gateway: tenants' own functions and operators must never resolve ahead of the catalog's (roles.ts).
      options: `-c search_path=${ADMIN_SEARCH_PATH.replaceAll(" ", "")}`,
      application_name: "db-gateway-hide-catalogs",
    };
    const admin = new pg.Client(connection);
    try {
      await admin.connect();
      const role = await inspectAdministrativeRole(admin);
      if (!role.superuser && values.check !== true)
        return fail(values.json, `the role "${role.role}" is not a superuser: only one may change the catalogs' privileges`);
      const databases = values.database ?? (await defaultDatabases(admin));
      const reports: DatabaseReport[] = [];
      for (const database of databases) {
        await admin.query("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext($1))", [databaseLockKey(database)]);
        try {
          const inside = new pg.Client(inDatabase(connection, database));
          await inside.connect();
          try {
            reports.push({ database, open: values.check === true ? await catalogsVisible(inside) : await hideCatalogs(inside) });
          } finally {
            await inside.end();
          }
        } finally {
          await admin.query("SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext($1))", [databaseLockKey(database)]);
        }
      }
      const stillOpen = values.check === true && reports.some((r) => r.open.length > 0);
      output(values.json, { databases: reports }, () =>
        reports
          .map(({ database, open }) =>
            open.length === 0
              ? `${database}: closed already`
              : `${database}: ${values.check === true ? "open" : "closed"} ${open.map((t) => t.replace(/^\w+ /, "")).join(", ")}`,
          )
          .join("\n"),
      );
      return stillOpen ? EXIT_FAILED : EXIT_OK;
    } catch (err) {
      return fail(values.json, (err as Error).message);
    } finally {
      await admin.end().catch(() => {});
    }
  },
};

/** The same connection to another database: a URL's own database would win over a separate `database` (node-postgres reads the URL last). */
function inDatabase(connection: pg.ClientConfig, database: string): pg.ClientConfig {
  if (connection.connectionString === undefined) return { ...connection, database };
  const url = new URL(connection.connectionString);
  url.pathname = `/${encodeURIComponent(database)}`;
  return { ...connection, connectionString: url.toString() };
}

/** template1, then the gateway's databases (owned by its owner role) that accept connections. */
async function defaultDatabases(admin: pg.Client): Promise<string[]> {
  const { rows } = await admin.query<{ datname: string }>(
    `SELECT d.datname FROM pg_catalog.pg_database d
      WHERE d.datname OPERATOR(pg_catalog.=) 'template1'
         OR (pg_catalog.pg_get_userbyid(d.datdba) OPERATOR(pg_catalog.=) $1 AND d.datallowconn)
      ORDER BY d.datname OPERATOR(pg_catalog.<>) 'template1', d.datname`,
    [OWNER_ROLE],
  );
  return rows.map((r) => r.datname);
}
