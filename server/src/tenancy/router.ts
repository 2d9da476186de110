import { GatewayError } from "../errors.js";
import { requirePlatform, type Principal } from "../grpc/api-keys.js";
import { databaseName, validatePlatform } from "./naming.js";
import type { DatabaseRegistry } from "./registry.js";

/**
 * Routes a data call to its database: checks the platform name, that the
 * caller's key is that platform's, the tenant id, and that the database
 * exists, in that order. Returns the database name.
 */
export function routeCall(registry: DatabaseRegistry, principal: Principal, platform: string, tenantId: string): string {
  validatePlatform(platform);
  requirePlatform(principal, platform);
  const name = databaseName(platform, tenantId);
  if (!registry.has(name)) {
    const what = tenantId === "" ? `the main database of platform "${platform}"` : `tenant "${tenantId}" of platform "${platform}"`;
    throw new GatewayError("DATABASE_NOT_FOUND", `${what} does not exist`, { metadata: { platform, tenant_id: tenantId } });
  }
  return name;
}
