// At start, the catalogs that name other databases and roles closed to tenant SQL wherever they are still open, or, without a superuser, what is open said once.
import type { Logger } from "../telemetry/logger.js";
import type { TenantLifecycle } from "./lifecycle.js";

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
