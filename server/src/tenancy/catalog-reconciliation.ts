// At start, the catalogs that name other databases and roles closed to tenant SQL wherever they are still open, or, without a superuser, what is open said once.
import type { Logger } from "../telemetry/logger.js";
import type { TenantLifecycle } from "./lifecycle.js";
import type { Clusters } from "./clusters.js";
import type { DatabaseRegistry } from "./registry.js";
import { inspectAdministrativeRole } from "./roles.js";

/**
 * At start: inspects each cluster's administrative role now (the catalog's
 * must answer; another's problems are reported), saying what it lacks or
 * has too much of, and returns the reconciliation of each cluster's catalogs
 * (`reconcileCatalogs`) as `done`: it runs in the background until `signal` aborts.
 */
export async function startReconciliation(
  clusters: Clusters,
  registry: DatabaseRegistry,
  log: Logger,
  onError: (message: string, err: unknown) => void,
  superuserExpected: boolean,
  signal: AbortSignal,
): Promise<{ done: Promise<unknown> }> {
  const several = clusters.all().length > 1;
  const administrators = await Promise.all(
    clusters.all().map(async (cluster) => {
      const where = several ? ` (cluster "${cluster.name}")` : "";
      const administrator = await inspectAdministrativeRole(cluster.admin).catch((err: unknown) => {
        if (cluster === clusters.primary) throw err;
        onError(`the administrative role of cluster "${cluster.name}" could not be inspected`, err);
        return undefined;
      });
      for (const problem of administrator?.problems ?? []) log.warn(problem + where);
      if (administrator?.superuser === true && !superuserExpected) {
        log.warn(`the administrative role "${administrator.role}"${where} is a superuser: db-gateway needs only CREATEDB and CREATEROLE (README: Security)`);
      }
      return { cluster, administrator };
    }),
  );
  // In a wrapper: returned bare, the promise would be awaited by this function's own.
  const done = Promise.all(
    administrators.map(async ({ cluster, administrator }) => {
      if (administrator === undefined) return;
      const managed = registry.namesOn(cluster.name).filter((d) => clusters.isManaged(d));
      await reconcileCatalogs(cluster.lifecycle, managed, administrator, log, onError, signal);
    }),
  );
  return { done };
}

/**
 * Closes to tenant SQL the catalogs that name other databases and roles, in
 * every database of a configured platform that still has them open (those
 * made by an older gateway, or while the administrative role was not a
 * superuser); new ones are closed when provisioned. An administrative role
 * that is not a superuser cannot, so it only looks, here and in `template1`
 * (which CreateTenant copies), and says once what is open and what to run.
 */
export async function reconcileCatalogs(
  lifecycle: Pick<TenantLifecycle, "reconcileCatalogs">,
  databases: readonly string[],
  administrator: { role: string; superuser: boolean },
  log: Logger,
  onError: (message: string, err: unknown) => void,
  signal: AbortSignal,
): Promise<void> {
  const { open, failed } = await lifecycle.reconcileCatalogs(databases, administrator.superuser, signal);
  for (const { database, error } of failed) onError(`the catalogs of database "${database}" could not be checked`, error);
  if (administrator.superuser) {
    if (open.length > 0) log.info({ databases: open.length }, "closed the catalogs that name other databases and roles to tenant SQL");
    return;
  }
  const template = await lifecycle.reconcileCatalogs(["template1"], false, signal);
  if (signal.aborted) return;
  const templateOpen = template.open.length > 0 || template.failed.length > 0;
  if (open.length === 0 && !templateOpen) return;
  log.warn(
    { databases: open.length, of: databases.length, template1: templateOpen ? "open" : "closed" },
    `the administrative role "${administrator.role}" is not a superuser and cannot close the catalogs that name other databases and roles ` +
      `(pg_database, pg_roles, pg_stat_activity …): tenant SQL can list them in ${open.length} of ${databases.length} databases` +
      (templateOpen ? ", and in those CreateTenant makes from template1" : "") +
      "; a superuser closes them with `db-gateway hide-catalogs` (README: Security)",
  );
}
