import { GatewayError } from "../errors.js";
import { requirePlatform, type Principal } from "../grpc/api-keys.js";
import { databaseName, validatePlatform } from "./naming.js";
import type { DatabaseRegistry } from "./registry.js";

/**
 * Routes data calls to their database: checks the platform name, that the
 * caller's key is that platform's, the tenant id, and that the database
 * exists, in that order. A database missing from the registry is looked for
 * once more through `refresh` (at most every `missRefreshMillis`), so a
 * tenant just created by another gateway instance is found at once.
 */
export class Router {
  #lastMiss = 0;

  constructor(
    private readonly registry: DatabaseRegistry,
    private readonly refresh: () => Promise<void>,
    private readonly missRefreshMillis = 1_000,
  ) {}

  /** The database name of a call, or an error with the right status. */
  async route(principal: Principal, platform: string, tenantId: string): Promise<string> {
    validatePlatform(platform);
    requirePlatform(principal, platform);
    const name = databaseName(platform, tenantId);
    if (this.registry.has(name)) return name;
    if (Date.now() - this.#lastMiss > this.missRefreshMillis) {
      this.#lastMiss = Date.now();
      await this.refresh().catch(() => undefined);
      if (this.registry.has(name)) return name;
    }
    const what = tenantId === "" ? `the main database of platform "${platform}"` : `tenant "${tenantId}" of platform "${platform}"`;
    throw new GatewayError("DATABASE_NOT_FOUND", `${what} does not exist`, { metadata: { platform, tenant_id: tenantId } });
  }
}
