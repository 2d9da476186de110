import type { QueryService } from "../gen/dbgateway/v1/query_service_pb.js";
import { execute, prepareStatement } from "../execution/execute.js";
import type { ServiceImpl } from "../grpc/service-adapter.js";
import type { PoolMap } from "../pool/pool-map.js";
import { routeCall } from "../tenancy/router.js";
import type { DatabaseRegistry } from "../tenancy/registry.js";

/** QueryService: request → route to the tenant's database → pool → PostgreSQL → result. */
export function createQueryService(registry: DatabaseRegistry, pools: PoolMap): ServiceImpl<(typeof QueryService)["method"]> {
  return {
    async query(request, ctx) {
      const database = routeCall(registry, ctx.principal, request.platform, request.tenantId);
      const statement = prepareStatement(request);
      const result = await pools.withConnection(database, (client) => execute(client, statement));
      return { result };
    },
  };
}
