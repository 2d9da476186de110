// AdminService's handlers, for the admin key: tenant creation and removal, quotas and migrations (audited), the audit trail, database lists and pool statistics.
import { timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { AuditLog } from "../audit/audit-log.js";
import { GatewayError, toGatewayError } from "../errors.js";
import { QuotaScope, type AdminService } from "../../../wire/src/gen/dbgateway/v1/admin_service_pb.js";
import type { PoolManager } from "../pool/pool-manager.js";
import type { Clusters } from "../tenancy/clusters.js";
import { databaseName } from "../tenancy/naming.js";
import type { DatabaseRegistry } from "../tenancy/registry.js";
import type { StoredQuota } from "../tenancy/quotas.js";
import { forgetTenantQuota, limitsMessage, quotaDetail, quotaMessage, quotaOfRequest, requestedDetail, type QuotaAdministration } from "./quota-admin.js";
import type { Migrator } from "../tenancy/migrator.js";
import { backupHandlers, type BackupAdministration } from "./backup-admin.js";
import { migrate, type MigrationAdministration } from "./migration-admin.js";
import { moveTenant } from "./move-admin.js";
import type { TenantMover } from "../tenancy/tenant-move.js";
import { databaseMessage as describe, safeDatabaseName } from "./database-message.js";
import type { CallContext, ServiceImpl } from "./service-contract.js";

/** Where administrative actions are recorded. */
export interface AuditOptions {
  audit: AuditLog;
  /** Told when an action could not be recorded: the action itself stands. */
  onAuditFailure(err: unknown): void;
}

/**
 * AdminService: tenant database lifecycle and the audit trail. Only the admin
 * key reaches it (see `ServiceHooks.authorize`). Every CreateTenant and
 * DropTenant is recorded in the audit trail with its outcome, failures
 * included.
 */
export function createAdminService(
  registry: DatabaseRegistry,
  lifecycle: Clusters,
  pools: PoolManager,
  configuredPlatforms: ReadonlySet<string>,
  { audit, onAuditFailure }: AuditOptions,
  quotaAdministration: QuotaAdministration,
  fleet: { migrator: Migrator; backups: Omit<BackupAdministration, "audited">; mover: TenantMover },
): ServiceImpl<(typeof AdminService)["method"]> {
  const actorOf = (ctx: CallContext) => (ctx.clientCertificate ? `admin key, client certificate "${ctx.clientCertificate}"` : "admin key");
  const migrationAdministration: MigrationAdministration = {
    migrator: fleet.migrator,
    facts: fleet.backups.facts,
    actorOf,
    requireConfigured: (platform) => lifecycle.requireConfigured(platform),
    record: (ctx, entry) => audit.record({ actor: actorOf(ctx), peer: ctx.peer, requestId: ctx.record.requestId, ...entry }).catch(onAuditFailure),
  };
  /** Runs an action and records it, whatever its outcome. */
  const audited = async (
    ctx: CallContext,
    action: string,
    /** What the action is about; `database` when it is not the tenant's database (a platform's quota: none). */
    target: { platform: string; tenantId: string; database?: string },
    detail: Record<string, string>,
    run: () => Promise<string>,
  ) => {
    let outcome = "OK";
    let database: string | undefined;
    try {
      database = await run();
      return database;
    } catch (err) {
      outcome = toGatewayError(err).reason;
      throw err;
    } finally {
      await audit
        .record({
          actor: actorOf(ctx),
          peer: ctx.peer,
          requestId: ctx.record.requestId,
          action,
          platform: target.platform,
          tenantId: target.tenantId,
          // What it was about, as far as the request named it, when it failed before knowing.
          database: database ?? target.database ?? safeDatabaseName(target.platform, target.tenantId),
          outcome,
          detail,
        })
        .catch(onAuditFailure);
    }
  };
  return {
    ...backupHandlers({ ...fleet.backups, audited }),
    migrate: (request, responses, ctx) => migrate(request, responses, ctx, migrationAdministration),
    moveTenant: (request, ctx) => moveTenant(request, ctx, fleet.mover, audited),
    async createTenant(request, ctx) {
      const detail: Record<string, string> = request.template ? { template: request.template } : {};
      if (request.cluster) detail.cluster = request.cluster;
      const name = await audited(ctx, "tenant.create", request, detail, () =>
        lifecycle.create(request.platform, request.tenantId, request.template, request.cluster),
      );
      return { database: describe(name, registry.clusterOf(name)) };
    },
    async dropTenant(request, ctx) {
      let cluster: string | undefined;
      const name = await audited(ctx, "tenant.drop", request, {}, async () => {
        cluster = registry.clusterOf(safeDatabaseName(request.platform, request.tenantId));
        const dropped = await lifecycle.drop(request.platform, request.tenantId);
        await forgetTenantQuota(quotaAdministration, request.platform, request.tenantId);
        await fleet.backups.facts.forget(dropped);
        return dropped;
      });
      return { database: describe(name, cluster) };
    },
    async listAuditEvents(request) {
      if (request.platform !== "") lifecycle.requireConfigured(request.platform);
      const limit = Math.min(request.pageSize || 100, 1_000);
      let beforeId: bigint | undefined;
      if (request.pageToken !== "") {
        if (!/^[1-9]\d{0,18}$/.test(request.pageToken)) throw new GatewayError("INVALID_REQUEST", "page_token is not one this call returned");
        beforeId = BigInt(request.pageToken);
      }
      const events = await audit.list({ platform: request.platform, beforeId, limit: limit + 1 });
      const page = events.slice(0, limit);
      return {
        events: page.map((e) => ({ ...e, time: timestampFromDate(e.time) })),
        nextPageToken: events.length > limit ? page.at(-1)!.id.toString() : "",
      };
    },
    async getPoolStats(request) {
      if (request.platform !== "") lifecycle.requireConfigured(request.platform);
      const prefix = request.platform === "" ? "" : `${request.platform}_`;
      const totals = pools.stats();
      return {
        totals: {
          ...totals,
          evictions: BigInt(totals.evictions),
          poolsCreated: BigInt(totals.poolsCreated),
          hits: BigInt(totals.hits),
          misses: BigInt(totals.misses),
          connectionsOpened: BigInt(totals.connectionsOpened),
          timeouts: BigInt(totals.timeouts),
          rejected: BigInt(totals.rejected),
        },
        pools: pools
          .poolStats()
          .filter((p) => p.database.startsWith(prefix))
          .map((p) => ({
            database: p.database,
            size: p.size,
            connecting: p.connecting,
            idle: p.idle,
            busy: p.busy,
            waiting: p.waiting,
            hits: BigInt(p.hits),
            misses: BigInt(p.misses),
            timeouts: BigInt(p.timeouts),
            rejected: BigInt(p.rejected),
            connectionsOpened: BigInt(p.opened),
            connectionsClosed: BigInt(p.closed),
            connectionsStolen: BigInt(p.stolen),
            connectionsIdleClosed: BigInt(p.idleClosed),
            connectionsExpired: BigInt(p.expired),
            connectionsDiscarded: BigInt(p.discarded),
            lastUsedTime: timestampFromMs(p.lastUsedAt),
          })),
      };
    },
    async setQuota(request, ctx) {
      const requested = request.quota;
      const forTenant = requested?.scope === QuotaScope.TENANT;
      const target = { platform: requested?.platform ?? "", tenantId: requested?.tenantId ?? "", ...(forTenant ? {} : { database: "" }) };
      // What was asked, then what was set and what it replaced: the audit trail records them, never more.
      const detail: Record<string, string> = requestedDetail(requested);
      let stored: StoredQuota | undefined;
      await audited(ctx, "quota.set", target, detail, async () => {
        const quota = quotaOfRequest(requested, quotaAdministration);
        lifecycle.requireConfigured(quota.platform);
        const previous = quotaAdministration.quotas.stored(quota);
        stored = await quotaAdministration.store.put(quota);
        quotaAdministration.quotas.put(stored);
        quotaAdministration.onChange();
        for (const key of Object.keys(detail)) delete detail[key];
        Object.assign(detail, { scope: quota.scope }, quotaDetail(quota.limits), quotaDetail(previous?.limits ?? {}, "previous_"));
        return forTenant ? databaseName(quota.platform, quota.tenantId) : "";
      });
      return { quota: quotaMessage(stored!) };
    },
    async listQuotas(request) {
      if (request.platform !== "") lifecycle.requireConfigured(request.platform);
      const platforms = request.platform === "" ? configuredPlatforms : new Set([request.platform]);
      const { quotas } = quotaAdministration;
      return {
        quotas: quotas.list(platforms).map(quotaMessage),
        platformDefaults: limitsMessage(quotas.defaults.platform),
        tenantDefaults: limitsMessage(quotas.defaults.tenant),
      };
    },
    async listDatabases(request) {
      if (request.platform !== "") lifecycle.requireConfigured(request.platform);
      const platforms = request.platform === "" ? configuredPlatforms : new Set([request.platform]);
      return { databases: registry.list(platforms).map((d) => describe(d.name, registry.clusterOf(d.name))) };
    },
  };
}
