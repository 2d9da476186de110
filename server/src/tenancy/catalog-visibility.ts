// What tenant SQL may read of the server beyond its own database: the shared catalogs and statistics that name other databases and roles are closed to it.
import type pg from "pg";

/**
 * Relations of `pg_catalog` that PostgreSQL lets every role read and that
 * name other databases or roles, or map their OIDs to each other: the
 * database and role lists, memberships, per-role and per-database settings,
 * comments and security labels on shared objects, and the statistics views
 * that show every backend's or database's name. Absent ones (an older or
 * newer server) are skipped.
 */
export const HIDDEN_RELATIONS: readonly string[] = [
  "pg_database",
  "pg_roles",
  "pg_user",
  "pg_group",
  "pg_auth_members",
  "pg_db_role_setting",
  "pg_shdescription",
  "pg_shseclabel",
  "pg_seclabels",
  "pg_shdepend",
  "pg_parameter_acl",
  "pg_replication_origin",
  "pg_subscription",
  "pg_stat_activity",
  "pg_stat_database",
  "pg_stat_database_conflicts",
  "pg_stat_progress_vacuum",
  "pg_stat_progress_analyze",
  "pg_stat_progress_cluster",
  "pg_stat_progress_create_index",
  "pg_stat_progress_copy",
  "pg_stat_progress_basebackup",
  "pg_prepared_xacts",
  "pg_replication_slots",
  "pg_stat_replication",
  "pg_stat_replication_slots",
  "pg_stat_subscription",
  "pg_stat_subscription_stats",
];

/**
 * Functions behind those views that a tenant could call directly: every
 * backend's database and role (`pg_stat_get_activity`, the progress views'
 * `pg_stat_get_progress_info`, `pg_stat_get_backend_dbid`/`_userid`),
 * prepared transactions and replication slots with their databases, and
 * `pg_database_size(oid)`, whose refusal names the database of any OID.
 * `pg_database_size(name)` stays: a tenant may read its own size, and
 * PostgreSQL refuses another's (CONNECT) without naming anything new.
 */
export const HIDDEN_FUNCTIONS: readonly string[] = [
  "pg_stat_get_activity",
  "pg_stat_get_progress_info",
  "pg_stat_get_backend_dbid",
  "pg_stat_get_backend_userid",
  "pg_prepared_xact",
  "pg_get_replication_slots",
  "pg_stat_get_replication_slot",
  "pg_stat_get_subscription",
  "pg_stat_get_subscription_stats",
  "pg_stat_get_wal_senders",
  "pg_database_size(oid)",
];

/**
 * What of `HIDDEN_RELATIONS` and `HIDDEN_FUNCTIONS` PUBLIC may still use in
 * the database of `inside`, as `ON …` targets of REVOKE. Catalog ACLs live in
 * each database's own pg_class and pg_proc (pg_database's data is shared, its
 * ACL is not), so this is per database, and CREATE DATABASE copies the
 * template's. Run with `ADMIN_SEARCH_PATH`.
 */
export async function catalogsVisible(inside: pg.ClientBase): Promise<string[]> {
  const names = HIDDEN_FUNCTIONS.filter((f) => !f.includes("("));
  const signatures = HIDDEN_FUNCTIONS.filter((f) => f.includes("(")).map((f) => `pg_catalog.${f}`);
  const { rows } = await inside.query<{ target: string }>(
    `SELECT 'TABLE pg_catalog.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname) AS target
       FROM pg_catalog.pg_class c
      WHERE c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
        AND c.relname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.name[])
        AND pg_catalog.has_any_column_privilege('public', c.oid, 'SELECT')
     UNION ALL
     SELECT 'FUNCTION pg_catalog.' OPERATOR(pg_catalog.||) p.oid::pg_catalog.regprocedure::pg_catalog.text
       FROM pg_catalog.pg_proc p
      WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
        AND (p.proname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.name[])
             OR p.oid OPERATOR(pg_catalog.=) ANY (SELECT pg_catalog.to_regprocedure(s) FROM pg_catalog.unnest($3::pg_catalog.text[]) s))
        AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
      ORDER BY 1`,
    [HIDDEN_RELATIONS, names, signatures],
  );
  return rows.map((r) => r.target);
}

/**
 * Revokes from PUBLIC, in the database of `inside`, whatever
 * `catalogsVisible` finds, and returns it (empty when there was nothing to
 * do, so that a database already done is not written to). The objects belong
 * to the bootstrap superuser: only a superuser can do this (anyone else's
 * REVOKE is only a warning). Run with `ADMIN_SEARCH_PATH`, inside a
 * transaction when it must go with other work.
 */
export async function hideCatalogs(inside: pg.ClientBase): Promise<string[]> {
  const visible = await catalogsVisible(inside);
  for (const target of visible) await inside.query(`REVOKE ALL ON ${target} FROM PUBLIC`);
  return visible;
}
