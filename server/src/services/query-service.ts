import type { QueryService } from "../gen/dbgateway/v1/query_service_pb.js";
import { execute, prepareStatement } from "../execution/execute.js";
import type { ServiceImpl } from "../grpc/service-adapter.js";
import type { PoolManager } from "../pool/pool-manager.js";
import type { Router } from "../tenancy/router.js";

/**
 * QueryService: request → route to the tenant's database → pool → PostgreSQL
 * → result. A statement runs until the call's deadline, or for at most
 * `maxStatementMillis` when the call has none.
 */
export function createQueryService(router: Router, pools: PoolManager, maxStatementMillis: number): ServiceImpl<(typeof QueryService)["method"]> {
  return {
    async query(request, ctx) {
      const database = await router.route(ctx.principal, request.platform, request.tenantId);
      const statement = prepareStatement(request);
      const limits = { deadline: Math.min(ctx.deadline, Date.now() + maxStatementMillis), signal: ctx.signal };
      const result = await pools.withConnection(database, (client) => execute(client, statement), limits);
      return { result };
    },
  };
}
