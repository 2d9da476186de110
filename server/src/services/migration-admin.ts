// AdminService.Migrate: a platform's migrations run over its databases, one result streamed per database, each change and the run recorded in the audit trail.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { AuditEntry } from "../audit/audit-log.js";
import { toRpcStatus } from "../client-errors.js";
import { GatewayError, toGatewayError } from "../errors.js";
import type { ResponseStream } from "../execution/call-streams.js";
import { MigrationOutcome, type MigrateRequest, type MigrateResponseSchema } from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import { migrationSet, type Migration } from "../tenancy/migrations.js";
import {
  DEFAULT_MIGRATION_CONCURRENCY,
  MAX_MIGRATION_CONCURRENCY,
  type DatabaseMigrationResult,
  type MigrationOutcome as Outcome,
  type Migrator,
} from "../tenancy/migrator.js";
import type { TenantFactStore } from "../tenancy/tenant-facts.js";
import type { CallContext } from "./service-contract.js";

const OUTCOMES: Record<Outcome, MigrationOutcome> = {
  applied: MigrationOutcome.APPLIED,
  current: MigrationOutcome.CURRENT,
  pending: MigrationOutcome.PENDING,
  failed: MigrationOutcome.FAILED,
  drifted: MigrationOutcome.DRIFTED,
  skipped: MigrationOutcome.SKIPPED,
};

export interface MigrationAdministration {
  migrator: Migrator;
  /** Where each database's version is noted for ListTenants. */
  facts: Pick<TenantFactStore, "noteVersion">;
  requireConfigured(platform: string): void;
  /** Records an action in the audit trail (its failure is the caller's to report, not the call's). */
  record(ctx: CallContext, entry: Pick<AuditEntry, "action" | "platform" | "tenantId" | "database" | "outcome" | "detail">): Promise<void>;
  actorOf(ctx: CallContext): string;
}

/** The Migrate handler. */
export async function migrate(
  request: MigrateRequest,
  responses: ResponseStream<typeof MigrateResponseSchema>,
  ctx: CallContext,
  admin: MigrationAdministration,
): Promise<void> {
  const started = performance.now();
  const counts: Record<Outcome, number> = { applied: 0, current: 0, pending: 0, failed: 0, drifted: 0, skipped: 0 };
  const versions = (list: readonly bigint[]) => list.join(",");
  const run = async (migrations: readonly Migration[]) =>
    admin.migrator.run({
      platform: request.platform,
      migrations,
      dryRun: request.dryRun,
      concurrency: request.concurrency || DEFAULT_MIGRATION_CONCURRENCY,
      stopOnFailure: request.stopOnFailure,
      ...(request.tenantIds.length > 0 ? { tenantIds: request.tenantIds } : {}),
      actor: admin.actorOf(ctx),
      deadline: ctx.deadline,
      signal: ctx.signal,
      onResult: async (r: DatabaseMigrationResult) => {
        counts[r.outcome]++;
        if (r.outcome !== "skipped" && r.outcome !== "pending" && r.version > 0n) await admin.facts.noteVersion(r.database, r.version);
        if (r.outcome === "applied" || r.outcome === "failed" || r.outcome === "drifted") {
          await admin.record(ctx, {
            action: "migration.apply",
            platform: request.platform,
            tenantId: r.tenantId,
            database: r.database,
            outcome: r.error === undefined ? "OK" : r.error.reason,
            detail: {
              applied: versions(r.applied),
              version: r.version.toString(),
              ...(r.failedVersion !== undefined ? { failed_version: r.failedVersion.toString() } : {}),
            },
          });
        }
        await responses.send({
          result: {
            case: "database",
            value: {
              database: r.database,
              tenantId: r.tenantId,
              outcome: OUTCOMES[r.outcome],
              applied: r.applied,
              version: r.version,
              ...(r.error !== undefined ? { error: toRpcStatus(r.error) } : {}),
              failedVersion: r.failedVersion ?? 0n,
              duration: durationFromMs(Math.round(r.millis)),
            },
          },
        });
      },
    });
  let outcome = "OK";
  let migrations: Migration[] = [];
  try {
    admin.requireConfigured(request.platform);
    migrations = migrationSet(request.migrations);
    if (request.concurrency > MAX_MIGRATION_CONCURRENCY) {
      throw new GatewayError("INVALID_REQUEST", `concurrency is at most ${MAX_MIGRATION_CONCURRENCY}`);
    }
    await run(migrations);
  } catch (err) {
    outcome = toGatewayError(err).reason;
    throw err;
  } finally {
    await admin.record(ctx, {
      action: "migration.run",
      platform: request.platform,
      tenantId: "",
      database: "",
      outcome,
      detail: {
        dry_run: String(request.dryRun),
        latest_version: (migrations.at(-1)?.version ?? 0n).toString(),
        migrations: versions(migrations.map((m) => m.version)),
        ...Object.fromEntries(Object.entries(counts).map(([k, n]) => [k, String(n)])),
      },
    });
  }
  await responses.send({
    result: {
      case: "totals",
      value: {
        databases: Object.values(counts).reduce((a, b) => a + b, 0),
        ...counts,
        latestVersion: migrations.at(-1)!.version,
        duration: durationFromMs(Math.round(performance.now() - started)),
      },
    },
  });
}
