// What a tenant's move asks of its clusters: the replication objects' name, the databases and sessions there, and the sequences logical replication does not copy.
import { createHash } from "node:crypto";
import type pg from "pg";
import type { Cluster } from "./clusters.js";

/** The publication's, subscription's and slot's name for a database: a slot's name is the source cluster's, so unique per database, within 63 bytes. */
export function replicationName(database: string): string {
  return `dbgateway_move_${createHash("sha256").update(database).digest("hex").slice(0, 24)}`;
}

/** Whether the cluster's pg_database has the database. */
export async function hasDatabase(cluster: Cluster, database: string): Promise<boolean> {
  return (await cluster.admin.query("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", [database])).rowCount === 1;
}

/** The cluster's server_version_num. */
export async function serverVersion(cluster: Cluster): Promise<number> {
  return Number((await cluster.admin.query<{ v: string }>("SHOW server_version_num")).rows[0]!.v);
}

/** The tenant role's sessions in the database that are not idle (a statement running, a transaction open). */
export async function busySessions(cluster: Cluster, database: string, role: string): Promise<number> {
  const { rows } = await cluster.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND usename = $2 AND state <> 'idle'",
    [database, role],
  );
  return rows[0]!.n;
}

/** The tenant role's sessions in the database. */
export async function sessions(cluster: Cluster, database: string, role: string): Promise<number> {
  const { rows } = await cluster.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND usename = $2", [
    database,
    role,
  ]);
  return rows[0]!.n;
}

/** Logical replication copies no sequence: each is set on the target to its value on the source (the source written no more). */
export async function copySequences(sourceInside: pg.Client, target: Cluster, database: string): Promise<number> {
  const { rows } = await sourceInside.query<{ name: string; value: string }>(
    "SELECT pg_catalog.format('%I.%I', schemaname, sequencename) AS name, last_value::text AS value FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL",
  );
  if (rows.length === 0) return 0;
  const inside = await target.connectTo(database);
  try {
    for (const { name, value } of rows) await inside.query("SELECT pg_catalog.setval($1::pg_catalog.regclass, $2::bigint, true)", [name, value]);
  } finally {
    await inside.end();
  }
  return rows.length;
}
