// Routes a data call to its database: platform, key, tenant id and existence checked in that order, each failure with its own status.
import { GatewayError } from "../errors.js";
import { requirePlatform, type Principal } from "../principal.js";
import { databaseName, validatePlatform } from "./naming.js";
import type { DatabaseRegistry } from "./registry.js";

/** Names that were looked for and missing are not looked for again for this long. */
const MISS_TTL_MILLIS = 1_000;
/** Bounds the memory of remembered misses (names come from callers). */
const MAX_REMEMBERED_MISSES = 10_000;

/**
 * Routes data calls to their database: checks the platform name, that the
 * caller's key is that platform's, the tenant id, and that the database
 * exists, in that order. A name missing from the registry is looked up once
 * in PostgreSQL (`lookup`, which also registers and adopts it when found), so
 * a tenant just created by another gateway instance or out of band is found
 * at once; misses are remembered for a second so that a stream of calls for
 * a missing tenant does not become a stream of look-ups.
 */
export class Router {
  readonly #misses = new Map<string, number>();
  readonly #lookups = new Map<string, Promise<boolean>>();

  constructor(
    private readonly registry: DatabaseRegistry,
    private readonly lookup: (database: string) => Promise<boolean>,
  ) {}

  /**
   * The database name of a call, or an error with the right status. The
   * call's record learns the database, for its log line and span.
   */
  async route(call: { principal: Principal; record: { database: string } }, platform: string, tenantId: string): Promise<string> {
    validatePlatform(platform);
    requirePlatform(call.principal, platform, tenantId);
    const name = databaseName(platform, tenantId);
    call.record.database = name;
    return this.#existing(platform, tenantId, name);
  }

  /** Checks the platform name, and that the caller's key is that platform's. */
  checkPlatform(call: { principal: Principal }, platform: string): void {
    validatePlatform(platform);
    requirePlatform(call.principal, platform);
  }

  /** The database of a tenant of a platform already checked (`checkPlatform`), or an error with the right status. */
  database(platform: string, tenantId: string): Promise<string> {
    return this.#existing(platform, tenantId, databaseName(platform, tenantId));
  }

  /** `name`, the tenant's database, once known to exist; DATABASE_NOT_FOUND otherwise. */
  async #existing(platform: string, tenantId: string, name: string): Promise<string> {
    if (this.registry.has(name) || (await this.#lookUp(name))) return name;
    const what = tenantId === "" ? `the main database of platform "${platform}"` : `tenant "${tenantId}" of platform "${platform}"`;
    throw new GatewayError("DATABASE_NOT_FOUND", `${what} does not exist`, { metadata: { platform, tenant_id: tenantId } });
  }

  async #lookUp(name: string): Promise<boolean> {
    const missedAt = this.#misses.get(name);
    if (missedAt !== undefined && Date.now() - missedAt < MISS_TTL_MILLIS) return false;
    let pending = this.#lookups.get(name);
    if (pending === undefined) {
      // A cluster that holds it and does not answer: the caller is told so (UNAVAILABLE), and nothing is remembered.
      pending = this.lookup(name)
        .catch((err: unknown) => {
          if (err instanceof GatewayError && err.reason === "DATABASE_UNAVAILABLE") throw err;
          return false;
        })
        .finally(() => this.#lookups.delete(name));
      this.#lookups.set(name, pending);
    }
    const found = await pending;
    if (found) {
      this.#misses.delete(name);
    } else {
      if (this.#misses.size >= MAX_REMEMBERED_MISSES) this.#misses.clear();
      this.#misses.set(name, Date.now());
    }
    return found;
  }
}
