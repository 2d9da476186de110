import { create } from "@bufbuild/protobuf";
import { DatabaseSchema, DatabaseType, type AdminService, type Database } from "../gen/dbgateway/v1/admin_service_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "../grpc/service-adapter.js";
import type { PoolManager } from "../pool/pool-manager.js";
import type { TenantLifecycle } from "../tenancy/lifecycle.js";
import { parseDatabaseName } from "../tenancy/naming.js";
import type { DatabaseRegistry } from "../tenancy/registry.js";

/** AdminService: tenant database lifecycle. Only the admin key reaches it (see `ServiceHooks.authorize`). */
export function createAdminService(
  registry: DatabaseRegistry,
  lifecycle: TenantLifecycle,
  pools: PoolManager,
  configuredPlatforms: ReadonlySet<string>,
): ServiceImpl<(typeof AdminService)["method"]> {
  return {
    async createTenant(request) {
      const name = await lifecycle.create(request.platform, request.tenantId, request.template);
      return { database: describe(name) };
    },
    async dropTenant(request) {
      const name = await lifecycle.drop(request.platform, request.tenantId);
      return { database: describe(name) };
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
    async listDatabases(request) {
      if (request.platform !== "") lifecycle.requireConfigured(request.platform);
      const platforms = request.platform === "" ? configuredPlatforms : new Set([request.platform]);
      return { databases: registry.list(platforms).map((d) => describe(d.name)) };
    },
  };
}

function describe(name: string): Database {
  const parsed = parseDatabaseName(name)!;
  return create(DatabaseSchema, {
    name,
    platform: parsed.platform,
    tenantId: parsed.tenantId,
    type: parsed.tenantId === "" ? DatabaseType.MAIN : DatabaseType.TENANT,
  });
}
